"""`cleanup --experiment` at scale: R runs x 30 checkpoints in a SQLite store, down to --keep 10.

    .venv/bin/python benchmarks/cleanup_scale.py                  # R = 100, 200, 400

For each R, a fresh SQLite store gets R finished runs, made directly with MlflowClient: each
run logs C small fake checkpoints (<model>_epochNNNN.pth) as artifacts in hype_checkpoints/ and
has the tag hype.checkpoint_dir pointing at a local folder holding copies of them. Then the
real command runs, in its own process, as a user would run it:

    python cli.py cleanup --experiment E --keep K --tracking-uri sqlite:///... --json

It deletes (C - K) tracked checkpoints and (C - K) local copies per run. The script checks
that exactly the newest K are left on both sides, and prints the wall time, the time per
deletion, and the time per deletion after subtracting the command's fixed cost (the same
command on an experiment with one run and nothing to delete). Constant time per deletion
across R is what linear growth looks like.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_store(root: Path, runs: int, checkpoints: int, size: int) -> tuple[str, str]:
    """A SQLite store under root with `runs` finished runs of `checkpoints` checkpoints each."""
    from mlflow.tracking import MlflowClient

    from tracker import layout
    from tracker.tracking import get_or_create_experiment, tune_sqlite_commits

    tune_sqlite_commits()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = "cleanup-scale"
    exp_id = get_or_create_experiment(client, uri, experiment)
    payload = os.urandom(size)
    for i in range(runs):
        local = root / "checkpoints" / f"run{i:04d}"
        local.mkdir(parents=True)
        for epoch in range(1, checkpoints + 1):
            (local / f"m_epoch{epoch:04d}.pth").write_bytes(payload)
        run = client.create_run(exp_id, run_name=f"run{i}", tags={
            layout.TAG_MODEL_NAME: "m", layout.TAG_CHECKPOINT_DIR: str(local)})
        client.log_artifacts(run.info.run_id, str(local), layout.CHECKPOINT_FOLDER)
        client.set_terminated(run.info.run_id, "FINISHED")
    return uri, experiment


def run_cleanup(uri: str, experiment: str, keep: int) -> tuple[float, dict]:
    cmd = [sys.executable, str(ROOT / "cli.py"), "cleanup", "--experiment", experiment,
           "--keep", str(keep), "--tracking-uri", uri, "--json"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"cleanup failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def check_left(root: Path, uri: str, runs: int, checkpoints: int, keep: int) -> None:
    """Exactly the newest `keep` of every run are left, tracked and local."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    want = [f"m_epoch{e:04d}.pth" for e in range(checkpoints - keep + 1, checkpoints + 1)]
    exp = client.get_experiment_by_name("cleanup-scale")
    seen = 0
    for run in client.search_runs([exp.experiment_id], max_results=10_000):
        local = Path(run.data.tags["hype.checkpoint_dir"])
        tracked_dir = Path(run.info.artifact_uri.removeprefix("file://")) / "hype_checkpoints"
        for side in (local, tracked_dir):
            left = sorted(p.name for p in side.iterdir())
            assert left == want, f"{side}: {left}"
        seen += 1
    assert seen == runs, f"{seen} runs, expected {runs}"


def measure(runs: int, checkpoints: int, keep: int, size: int, workdir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        uri, experiment = make_store(root, runs, checkpoints, size)
        setup = time.perf_counter() - t
        seconds, report = run_cleanup(uri, experiment, keep)
        check_left(root, uri, runs, checkpoints, keep)
    summary = report["summary"]
    expected = 2 * runs * (checkpoints - keep)
    assert summary["deleted"] == expected and summary["failed"] == 0, summary
    return {"runs": runs, "deleted": summary["deleted"], "seconds": seconds, "setup_s": setup}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, nargs="+", default=[100, 200, 400])
    p.add_argument("--checkpoints", type=int, default=30)
    p.add_argument("--keep", type=int, default=10)
    p.add_argument("--size", type=int, default=4096, help="bytes per fake checkpoint")
    p.add_argument("--repeat", type=int, default=3, help="fixed-cost measurements (median; 0: none, net = gross)")
    p.add_argument("--workdir", type=Path, default=None, help="default: the system's temp folder")
    args = p.parse_args(argv)

    print(f"{args.checkpoints} checkpoints per run, --keep {args.keep}, {args.size} B each; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    fixed = 0.0
    if args.repeat:
        fixed = statistics.median(measure(1, args.keep, args.keep, args.size, args.workdir)["seconds"]
                                  for _ in range(args.repeat))
        print(f"fixed cost (start-up, one run, nothing to delete): {fixed:.2f} s", flush=True)
    rows = []
    for runs in args.runs:
        row = measure(runs, args.checkpoints, args.keep, args.size, args.workdir)
        row["ms_per_deletion"] = 1000 * row["seconds"] / row["deleted"]
        row["ms_per_deletion_net"] = 1000 * (row["seconds"] - fixed) / row["deleted"]
        row["fixed_s"] = fixed
        rows.append(row)
        print(f"{runs:4d} runs: deleted {row['deleted']:6,} files (tracked + local) in "
              f"{row['seconds']:6.1f} s = {row['ms_per_deletion']:.2f} ms/deletion, "
              f"{row['ms_per_deletion_net']:.2f} ms net of the fixed cost "
              f"(store built in {row['setup_s']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    if len(rows) > 1:
        per = [r["ms_per_deletion_net"] for r in rows]
        print(f"net time per deletion varies by {100 * (max(per) / min(per) - 1):.0f}% from "
              f"{rows[0]['runs']} to {rows[-1]['runs']} runs (constant = linear in the number deleted)")
    return rows


if __name__ == "__main__":
    main()
