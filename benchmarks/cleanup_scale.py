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
command on an experiment with one run and nothing to delete), in wall time and in the
command's CPU time. Constant time per deletion across R is what linear growth looks like.
Wall time also holds the file system's unlink latency, printed first (an unlink of a file
already on disk; about 2 ms on an ext4 mounted with `discard`); CPU time does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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
    from tracker.checkpoints.manifest import Binding, Entry, Manifest
    from tracker.store.open import get_or_create_experiment, tune_sqlite_commits

    tune_sqlite_commits()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = "cleanup-scale"
    exp_id = get_or_create_experiment(client, uri, experiment)
    payload = os.urandom(size)
    digest = hashlib.sha256(payload).hexdigest()
    for i in range(runs):
        run = client.create_run(exp_id, run_name=f"run{i}", tags={layout.TAG_MODEL_NAME: "m"})
        run_id = run.info.run_id
        # as the trainer lays it out: checkpoints/<run_id>/, bound to the run by its manifest
        local = root / "checkpoints" / run_id
        local.mkdir(parents=True)
        manifest = Manifest.create(local, Binding(run_id, uri, "m", "map", "max"))
        for epoch in range(1, checkpoints + 1):
            name = f"m_epoch{epoch:04d}.pth"
            (local / name).write_bytes(payload)
            manifest.record(Entry(epoch, name, size, digest, "stored"))
        client.set_tag(run_id, layout.TAG_CHECKPOINT_DIR, str(local))
        staged = root / "staged"  # the checkpoints only: the manifest is not an artifact
        staged.mkdir(exist_ok=True)
        for f in local.glob("m_epoch*.pth"):
            os.link(f, staged / f.name)
        client.log_artifacts(run_id, str(staged), layout.CHECKPOINT_FOLDER)
        shutil.rmtree(staged)
        client.set_terminated(run_id, "FINISHED")
    return uri, experiment


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def settle(seconds: float) -> None:
    """Write everything out and wait past ext4's 5 s commit interval.

    Unlinking a file whose blocks were never allocated (written moments ago) costs almost
    nothing; unlinking one that is on disk costs a journal update and, with `discard`, a
    trim. Without this, a small store is cleaned while much of it is still in the page cache
    and looks cheaper per file than a large one.
    """
    if seconds > 0:
        os.sync()
        time.sleep(seconds)


def unlink_floor(size: int, workdir: Path | None, wait: float, n: int = 300) -> float:
    """ms per os.unlink of a settled file of `size` bytes: the disk's share of a deletion."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        files = [Path(tmp) / f"f{i}" for i in range(n)]
        payload = os.urandom(size)
        for f in files:
            f.write_bytes(payload)
        settle(wait)
        t = time.perf_counter()
        for f in files:
            f.unlink()
        return 1000 * (time.perf_counter() - t) / n


def run_cleanup(uri: str, experiment: str, keep: int) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of the command, its JSON report)."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "cleanup", "--experiment", experiment,
           "--keep", str(keep), "--tracking-uri", uri, "--json"]
    cpu, t = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"cleanup failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, cpu, json.loads(done.stdout)


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
            left = sorted(p.name for p in side.iterdir() if p.name.endswith(".pth"))
            assert left == want, f"{side}: {left}"
        seen += 1
    assert seen == runs, f"{seen} runs, expected {runs}"


def measure(runs: int, checkpoints: int, keep: int, size: int, workdir: Path | None,
            wait: float) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        uri, experiment = make_store(root, runs, checkpoints, size)
        setup = time.perf_counter() - t
        settle(wait)  # old checkpoints are on disk, not in the page cache's delayed allocation
        seconds, cpu, report = run_cleanup(uri, experiment, keep)
        check_left(root, uri, runs, checkpoints, keep)
    summary = report["summary"]
    assert summary["deleted"] == runs * (checkpoints - keep) and summary["failed"] == 0, summary
    # files: each deleted checkpoint is a tracked copy and a local one
    files = sum(c["local"] + c["tracked"] for r in report["targets"] for c in r["checkpoints"]
                if c["status"] == "deleted")
    assert files == 2 * summary["deleted"], files
    return {"runs": runs, "deleted": files, "seconds": seconds, "cpu_s": cpu,
            "setup_s": setup}


def median_of(trials: int, runs: int, checkpoints: int, keep: int, size: int, workdir,
              wait: float) -> dict:
    """The measurement with the median wall time of `trials` fresh stores."""
    rows = sorted((measure(runs, checkpoints, keep, size, workdir, wait) for _ in range(trials)),
                  key=lambda r: r["seconds"])
    return rows[len(rows) // 2]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, nargs="+", default=[100, 200, 400])
    p.add_argument("--checkpoints", type=int, default=30)
    p.add_argument("--keep", type=int, default=10)
    p.add_argument("--size", type=int, default=4096, help="bytes per fake checkpoint")
    p.add_argument("--trials", type=int, default=1, help="fresh stores per size (median wall)")
    p.add_argument("--repeat", type=int, default=3,
                   help="fixed-cost measurements (median; 0: none, net = gross)")
    p.add_argument("--settle", type=float, default=6.0,
                   help="seconds to wait after sync before each cleanup (ext4 commits every 5 s)")
    p.add_argument("--workdir", type=Path, default=None, help="default: the system's temp folder")
    args = p.parse_args(argv)

    print(f"{args.checkpoints} checkpoints per run, --keep {args.keep}, {args.size} B each; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    floor = unlink_floor(args.size, args.workdir, args.settle)
    print(f"file system: {floor:.2f} ms per unlink of a settled {args.size} B file", flush=True)
    fixed = {"seconds": 0.0, "cpu_s": 0.0}
    if args.repeat:
        fixed = median_of(args.repeat, 1, args.keep, args.keep, args.size, args.workdir,
                          args.settle)
        print(f"fixed cost (start-up, one run, nothing to delete): {fixed['seconds']:.2f} s wall, "
              f"{fixed['cpu_s']:.2f} s CPU", flush=True)
    rows = []
    for runs in args.runs:
        row = median_of(args.trials, runs, args.checkpoints, args.keep, args.size, args.workdir,
                        args.settle)
        n = row["deleted"]
        row.update(fixed_s=fixed["seconds"], fixed_cpu_s=fixed["cpu_s"], unlink_ms=floor,
                   ms_per_deletion=1000 * row["seconds"] / n,
                   ms_per_deletion_net=1000 * (row["seconds"] - fixed["seconds"]) / n,
                   cpu_ms_per_deletion_net=1000 * (row["cpu_s"] - fixed["cpu_s"]) / n)
        rows.append(row)
        print(f"{runs:4d} runs: deleted {n:6,} files (tracked + local) in {row['seconds']:6.1f} s "
              f"= {row['ms_per_deletion']:.2f} ms/deletion; net of the fixed cost "
              f"{row['ms_per_deletion_net']:.2f} ms wall, {row['cpu_ms_per_deletion_net']:.2f} ms CPU "
              f"(store built in {row['setup_s']:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    if len(rows) > 1:
        for key, what in (("ms_per_deletion_net", "wall"), ("cpu_ms_per_deletion_net", "CPU")):
            per = [r[key] for r in rows]
            print(f"net {what} time per deletion from {rows[0]['runs']} to {rows[-1]['runs']} runs: "
                  f"{' -> '.join(f'{x:.2f}' for x in per)} ms (constant = linear in the number deleted)")
    return rows


if __name__ == "__main__":
    main()
