"""Kill the very first open of a fresh SQLite store at random moments; the store must stay usable.

    .venv/bin/python -m tests.stress.store_create --trials 20

Each trial starts a process that opens (so creates and migrates) a new store, SIGKILLs or
Ctrl+Cs it at a random moment after the first database file appears (while MLflow creates and
migrates its tables), then opens the store again in
a new process and creates a run in it. A trial passes when that works: the kill left either no
store or a complete one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPEN = ("import sys; from tracker.store.open import open_tracking_store; "
        "c = open_tracking_store(sys.argv[1]); print(c.create_run('0').info.run_id)")


def _start(uri: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", OPEN, uri], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def trial(work: Path, delay_s: float, sig: int) -> str | None:
    """None when the store opened after the kill, else what went wrong."""
    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    p = _start(uri, work)
    # The moment that matters starts when the first database file appears (MLflow is creating
    # tables): wait for it, then kill within the next delay_s.
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if any(f.name != "mlflow.db.lock" for f in work.iterdir()):
            break
        time.sleep(0.002)
    time.sleep(delay_s)
    if p.poll() is None:
        os.killpg(p.pid, sig)
    p.communicate(timeout=120)
    again = _start(uri, work)
    out, err = again.communicate(timeout=120)
    if again.returncode != 0:
        return f"reopen after a kill at {delay_s:.2f} s exited {again.returncode}: {err.strip()[-400:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.stress.store_create")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=1.2,
                    help="kill within this many seconds of the first database file appearing")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    failures = []
    with tempfile.TemporaryDirectory(prefix="hype-store-create-") as tmp:
        for i in range(args.trials):
            delay = rng.uniform(0.0, args.max_delay)
            sig = signal.SIGINT if i % 4 == 3 else signal.SIGKILL
            problem = trial(Path(tmp) / f"t{i:02d}", delay, sig)
            print(f"trial {i:2d}: {sig.name} at {delay:.2f} s: {'ok' if problem is None else problem}",
                  flush=True)
            if problem:
                failures.append(problem)
    print(f"{args.trials - len(failures)}/{args.trials} stores usable after a kill during creation")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
