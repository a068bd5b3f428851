"""The team setup end to end: `mlflow server` on PostgreSQL with proxied artifacts, reached only
through http://127.0.0.1:<port>. Train with retention and early stopping, kill -9 a run and
resume it, clean the experiment, serve the final model; and measure what tracking costs per
epoch through the server against the embedded SQLite store.

Early stopping is made deterministic with a --min-delta no loss change can beat: the monitored
value plateaus by definition, the best stays at the first counted epoch, and the stop epoch is
burn-in + 1 + patience whatever the numbers are.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from hype import manifolds
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port
from tests.test_serving import _env as serving_env
from tests.test_serving import invoke, started
from tracker import layout
from tracker.checkpoints.files import load
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EXPERIMENT = "pg-flow"
BURNIN, PATIENCE, KEEP = 2, 15, 3
STOP_EPOCH = BURNIN + 1 + PATIENCE  # 18
ARGS = ["--dim", "3", "--epochs", "200", "--burnin", str(BURNIN), "--eval-every", "1", "--negs", "5",
        "--lr", "1.0", "--monitor", "loss", "--min-delta", "1000", "--patience", str(PATIENCE),
        "--keep-checkpoints", str(KEEP), "--experiment", EXPERIMENT, "--quiet"]
REASON = re.compile(rf"stopped: no improvement of more than 1000 in loss for {PATIENCE} evaluations "
                    rf"\(best \S+ at epoch {BURNIN + 1}\)")
TIMING = re.compile(r"Training ([0-9.]+) s, of which tracking ([0-9.]+) s")


def _train(url: str, tmp: Path, folder: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", url,
         "--checkpoint-dir", str(tmp / folder), *args],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _kill_at(proc: subprocess.Popen, folder: Path, epoch: int) -> str:
    """SIGKILL the trainer's process group as soon as checkpoint `epoch` is on disk."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(folder.glob(f"*/tree_epoch{epoch:04d}.pth"))
        if found:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            return found[0].parent.name
        time.sleep(0.005)
    raise AssertionError(f"the run ended before epoch {epoch}:\n{proc.communicate()[0]}")


def _tracked(client: MlflowClient, run_id: str, folder: str = layout.CHECKPOINT_FOLDER) -> list[str]:
    return sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder))


def _local(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("tree_epoch*.pth"))


def _names(*epochs: int) -> list[str]:
    return [f"tree_epoch{e:04d}.pth" for e in sorted(set(epochs))]


@pytest.fixture(scope="module")
def flow(pg_mlflow_server, tmp_path_factory):
    """Two runs of the same settings in one experiment, started together: "full" trains to its
    early stop (with its MLflow model); "killed" is SIGKILLed after epoch 6 and resumed."""
    url = pg_mlflow_server.url
    tmp = tmp_path_factory.mktemp("pg-flow")
    dataset = str(write_tree_closure(tmp / "tree_closure.csv"))
    full = _train(url, tmp, "full", "--dataset", dataset, *ARGS)
    killed = _train(url, tmp, "killed", "--dataset", dataset, *ARGS, "--no-pyfunc")
    killed_id = _kill_at(killed, tmp / "killed", 6)
    full_out = _finished(full)
    resumed_out = _finished(_train(url, tmp, "killed", "--resume", killed_id, "--quiet"))
    (full_id,) = [p.name for p in (tmp / "full").iterdir()]
    return {"url": url, "client": MlflowClient(url), "tmp": tmp, "full": full_id, "killed": killed_id,
            "full_out": full_out, "resumed_out": resumed_out}


def test_retention_and_early_stopping_through_the_server(flow):
    client, run_id = flow["client"], flow["full"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a local path
    assert REASON.fullmatch(run.data.tags[layout.TAG_STOP_REASON]), run.data.tags[layout.TAG_STOP_REASON]
    assert run.data.tags[layout.TAG_BEST_EPOCH] == str(BURNIN + 1)
    expected = _names(BURNIN + 1, *range(STOP_EPOCH - KEEP + 1, STOP_EPOCH + 1))  # best + newest 3
    assert _tracked(client, run_id) == _local(flow["tmp"] / "full" / run_id) == expected
    assert _tracked(client, run_id, layout.FINAL_FOLDER) == ["tree.pth"]
    steps = sorted({m.step for m in client.get_metric_history(run_id, "loss")})
    assert steps == list(range(1, STOP_EPOCH + 1))
    train_s, tracking_s = map(float, TIMING.search(flow["full_out"]).groups())
    print(f"pg server, CLI run: {1000 * tracking_s / STOP_EPOCH:.0f} ms tracking per epoch "
          f"({train_s:.1f} s training in all)")


def test_kill_9_and_resume_through_the_server_match_the_uninterrupted_run(flow):
    client, run_id = flow["client"], flow["killed"]
    assert "Resuming run" in flow["resumed_out"]
    resumed, full = client.get_run(run_id), client.get_run(flow["full"])
    assert resumed.info.status == "FINISHED"
    for tag in (layout.TAG_STOP_REASON, layout.TAG_BEST_EPOCH, layout.TAG_BEST_VALUE,
                layout.TAG_RETAINED_EPOCHS):
        assert resumed.data.tags[tag] == full.data.tags[tag], tag
    folder = flow["tmp"] / "killed" / run_id
    assert _tracked(client, run_id) == _local(folder) == _tracked(client, flow["full"])
    assert not list(folder.glob("*.tmp"))
    for name in _local(folder):
        load(folder / name)
    assert torch.equal(load(folder / "tree.pth")["embeddings"],
                       load(flow["tmp"] / "full" / flow["full"] / "tree.pth")["embeddings"])


def test_cleanup_by_experiment_then_the_final_model_still_serves(flow):
    client, url = flow["client"], flow["url"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "cleanup", "--experiment", EXPERIMENT, "--keep", "1",
         "--tracking-uri", url], cwd=flow["tmp"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 runs: deleted 4 checkpoints")  # 2 per side per run
    for key in ("full", "killed"):
        run_id = flow[key]
        kept = _names(BURNIN + 1, STOP_EPOCH)  # best + newest 1
        assert _tracked(client, run_id) == _local(flow["tmp"] / key / run_id) == kept
        assert _tracked(client, run_id, layout.FINAL_FOLDER) == ["tree.pth"]
        assert (flow["tmp"] / key / run_id / "tree.pth").exists()

    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"runs:/{flow['full']}/model",
           "--env-manager", "local", "--host", HOST, "--port", str(port)]
    with started(cmd, serving_env(url), flow["tmp"] / "serve.log", f"http://{HOST}:{port}/ping"):
        resp = invoke(f"http://{HOST}:{port}", ["u", "v"], [["n.0.1", "n"], ["n.2.2.2", "n.0"]])
    assert resp.status_code == 200, resp.text
    final = load(flow["tmp"] / "full" / flow["full"] / "tree.pth")
    index = {n: i for i, n in enumerate(final["names"])}
    emb = final["embeddings"].to(torch.float64)
    expected = manifolds.get("poincare").distance(emb[[index["n.0.1"], index["n.2.2.2"]]],
                                                  emb[[index["n"], index["n.0"]]])
    assert [p["distance"] for p in resp.json()["predictions"]] == pytest.approx(expected.tolist())


# --- what a tracked epoch costs ----------------------------------------------------------------


def _in_process(uri: str, graph, ckpt: Path, epochs: int, experiment: str):
    config = TrainConfig(dim=3, epochs=epochs, burnin=BURNIN, eval_every=1, negs=5, lr=1.0)
    tconfig = TrackerConfig(store_every=True, model_name="tree", keep=KEEP, monitor="loss", patience=10_000,
                            checkpoint_root=ckpt, log_pyfunc=False)
    return run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment=experiment,
                        progress=False)


def _requests(log: Path, start: int) -> Counter:
    """Requests the server logged after byte `start`, by method and route (ids elided)."""
    text = log.read_bytes()[start:].decode(errors="replace")
    routes = re.findall(r'"(GET|POST|PUT|DELETE) (/[^ ?]*)', text)
    return Counter(f"{m} {re.sub(r'/mlflow-artifacts/artifacts/.*', '/mlflow-artifacts/artifacts/...', p)}"
                   for m, p in routes)


def test_tracking_cost_per_epoch_server_vs_sqlite(pg_mlflow_server, sqlite_tracking, tmp_path):
    """Every epoch logs metrics, decides on the monitored value, stores a checkpoint and retires
    the oldest. Requests per epoch come from the difference of a 10- and a 30-epoch run, so the
    start and the finish cancel out."""
    graph = load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv"))
    short, long = 10, 30
    sqlite = _in_process(sqlite_tracking.tracking_uri, graph, tmp_path / "sq", long, "cost")
    log = pg_mlflow_server.log_path
    counts = {}
    for epochs in (short, long):
        mark = log.stat().st_size
        server = _in_process(pg_mlflow_server.url, graph, tmp_path / "pg", epochs, f"cost-{epochs}")
        time.sleep(0.5)  # let the server's log catch up
        counts[epochs] = _requests(log, mark)
    per_epoch = {k: (counts[long][k] - counts[short][k]) / (long - short)
                 for k in counts[long] if counts[long][k] != counts[short][k]}
    total = sum(per_epoch.values())

    client = MlflowClient(pg_mlflow_server.url)
    t0 = time.perf_counter()
    for _ in range(20):
        client.get_run(server.run_id)
    request_ms = (time.perf_counter() - t0) / 20 * 1000

    sqlite_ms = 1000 * sqlite.tracking_seconds / long
    server_ms = 1000 * server.tracking_seconds / long
    print(f"\ntracking per epoch: sqlite {sqlite_ms:.0f} ms, pg server {server_ms:.0f} ms; "
          f"{total:g} requests per epoch through the server ({request_ms:.1f} ms per get_run):")
    for route, n in sorted(per_epoch.items(), key=lambda kv: -kv[1]):
        print(f"  {n:g} x {route}")
    # training thread: log_batch (early stopping folds the finite value it logged: no get_run);
    # the uploader: upload + listing, the checkpoint's model (create, its two files, its metrics
    # linked, finalize, outputs), and retention (delete the model, the file)
    assert total <= 12
    assert server_ms < 2000  # a sanity bound on a shared 2-core machine, not a benchmark
