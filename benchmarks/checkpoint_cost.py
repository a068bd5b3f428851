"""What one checkpoint costs in tracking requests, before and after checkpoints became LoggedModels.

    .venv/bin/python benchmarks/checkpoint_cost.py            # SQLite, then a local mlflow server

Per checkpoint of a mammal-sized run (about 45 KB), median over --n checkpoints:
- before: upload + the confirming listing (TrackedCheckpoints.upload), as before this change;
- after: the same plus the checkpoint's LoggedModel as the uploader makes it (create with its
  tags, the epoch's metrics linked, finalize, the run's outputs) and, for retention, deleting one
  model (delete_logged_model). Since checkpoints are stored on the uploader's thread, this is
  time beside training, not in it.
The two alternate checkpoint by checkpoint, so that load drift hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(uri: str, n: int, size: int = 45_000) -> tuple[float, float]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from tracker.checkpoints.models import CheckpointModels
    from tracker.checkpoints.tracked import TrackedCheckpoints

    client = MlflowClient(uri)
    exp = client.create_experiment(f"checkpoint-cost-{time.time_ns()}")
    run_id = client.create_run(exp).info.run_id
    store = TrackedCheckpoints(run_id, client=client)
    models = CheckpointModels(client, run_id, exp, _known={})
    before, after = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, 2 * n + 1):
            path = Path(tmp) / f"bench_epoch{i:04d}.pth"
            path.write_bytes(os.urandom(size))
            metric = [Metric("loss", 1.0 / i, int(time.time() * 1000), i)]
            t0 = time.perf_counter()
            if i % 2:
                client.log_batch(run_id, metrics=metric)
                store.upload(path)
                before.append(time.perf_counter() - t0)
                continue
            client.log_batch(run_id, metrics=metric)
            store.upload(path)
            models.log(path.name, i, size=size, sha256="0" * 64, best=False, metrics=metric)
            if i > 4:
                models.delete(i - 4)
            after.append(time.perf_counter() - t0)
    return statistics.median(before) * 1000, statistics.median(after) * 1000


def main(argv=None) -> list[tuple[str, float, float]]:
    """Prints and returns (store, before ms, after ms) for SQLite, then a local mlflow server."""
    from tracker.store.open import tune_sqlite_commits

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", type=int, nargs="?", default=20, help="checkpoints per side")
    n = p.parse_args(argv).n
    tune_sqlite_commits()  # as the trainer does: WAL, synchronous=NORMAL
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {n} checkpoints per side", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from tests.servers import mlflow_server

        b, a = measure(f"sqlite:///{tmp}/mlflow.db", n)
        rows.append(("SQLite (embedded)", b, a))
        with mlflow_server(Path(tmp) / "server") as server:
            rows.append(("mlflow server (proxied)", *measure(server.url, n)))
    for label, b, a in rows:
        print(f"{label:<26} before {b:6.1f} ms  after {a:6.1f} ms  (+{a - b:.1f} ms per checkpoint)",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
