"""The first `make train` on a fresh clone: training time with numba compiling, then warm.

    .venv/bin/python benchmarks/first_run.py              # the Makefile's mammal run, twice (~1.5 min)
    .venv/bin/python benchmarks/first_run.py --epochs 50  # shorter runs, the same compile

Runs `cli.py train` with the Makefile's settings (--quiet, a throwaway SQLite store and
checkpoint folder in a temporary directory) in a fresh interpreter, twice: first with an empty
NUMBA_CACHE_DIR, which is what a fresh clone has (its __pycache__ folders hold no kernels),
then with that cache warm. For each it prints the command's "Training X s" (what `make train`
prints: the epochs, their evaluations and tracking, compile included), what numba compiled
(each top-level compilation and its seconds, from numba's "numba:compile" events) and what it
loaded from the cache, epoch 1 against a later epoch and the first evaluation against a later
one. Also the time of `python cli.py --help`, the CPU model and the load average: the figures
move with other load on the machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402

TARGET_S = 15.0  # issue 14: first `make train` on a fresh clone, training time compile included
HELP_TARGET_S = 0.5
# The Makefile's `train` target, less the dataset (passed absolute: the run's cwd is a temp dir):
# since the defaults became its recipe (hype/config.py), it names no other option
MAKE_TRAIN: list[str] = []
MAMMALS = ROOT / "data" / "mammal_closure.csv"
_TRAINING_LINE = re.compile(r"^Training ([0-9.]+) s, of which tracking ([0-9.]+) s", re.M)


@dataclass(frozen=True)
class RunStats:
    training_s: float  # the command's own "Training X s"
    tracking_s: float  # "of which tracking Y s": MLflow's share of it
    wall_s: float  # the whole command: interpreter start, imports, store, final model
    compiles: list  # [(function, seconds)], top-level numba compilations only
    loads: list  # [(function, seconds)], overloads loaded from numba's cache
    epochs: list  # epoch_seconds metric of each epoch, in order
    evals: list  # seconds of each evaluation during training, in order


def _child(out: Path, cli_args: list) -> None:
    """In the timed interpreter: record numba's compilations and cache loads, then run cli.py."""
    from numba.core import caching, event

    compiles, loads, evals, depth = [], [], [], [0]

    class _Compiles(event.Listener):
        # a compilation compiles its callees inside its own event: count the outermost only
        def on_start(self, ev):
            depth[0] += 1
            if depth[0] == 1:
                self.t0 = time.perf_counter()

        def on_end(self, ev):
            depth[0] -= 1
            if depth[0] == 0:
                compiles.append((ev.data["dispatcher"].py_func.__qualname__,
                                 time.perf_counter() - self.t0))

    event.register("numba:compile", _Compiles())
    load_overload = caching.Cache.load_overload

    def timed_load(self, sig, target_context):
        t0 = time.perf_counter()
        cres = load_overload(self, sig, target_context)
        if cres is not None:
            loads.append((self._py_func.__qualname__, time.perf_counter() - t0))
        return cres

    caching.Cache.load_overload = timed_load
    import hype.train

    evaluate = hype.train.evaluate

    def timed_evaluate(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            evals.append(time.perf_counter() - t0)

    hype.train.evaluate = timed_evaluate
    atexit.register(lambda: out.write_text(json.dumps(
        {"compiles": compiles, "loads": loads, "evals": evals})))
    sys.argv = [str(ROOT / "cli.py"), *cli_args]
    import runpy

    runpy.run_path(str(ROOT / "cli.py"), run_name="__main__")


def _epoch_seconds(db: Path) -> list:
    """The run's epoch_seconds metric, by epoch (MLflow's SQLite schema: one row per step)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT step, value FROM metrics WHERE key = 'epoch_seconds' "
                            "ORDER BY step").fetchall()
    return [v for _, v in rows]


def run_train(tmp: Path, name: str, cache: Path | None, dataset: Path, cli_args: list) -> RunStats:
    """One `cli.py train` in a fresh interpreter; cache None keeps numba's default (__pycache__)."""
    work = tmp / name
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "MLFLOW_"))}
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    db = work / "mlflow.db"
    stats = work / "stats.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(stats), "--", "train",
           "--dataset", str(dataset), *cli_args, "--quiet", "--tracking-uri", f"sqlite:///{db}",
           "--checkpoint-dir", str(work / "checkpoints")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    found = _TRAINING_LINE.search(proc.stdout)
    if found is None:
        sys.exit(f"{name} run printed no 'Training X s' line:\n{proc.stdout}")
    recorded = json.loads(stats.read_text())
    return RunStats(float(found[1]), float(found[2]), wall, recorded["compiles"],
                    recorded["loads"], _epoch_seconds(db), recorded["evals"])


def time_help(repeats: int) -> list:
    """Wall seconds of `python cli.py --help`, each in a fresh interpreter."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], check=True,
                       capture_output=True, cwd=ROOT)
        out.append(time.perf_counter() - t0)
    return out



def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _later(values: list, first: int = 1) -> float:
    """The median of values after the first `first` (the compile-free cost), nan if none."""
    rest = values[first:]
    return statistics.median(rest) if rest else float("nan")


def _pair(r: RunStats | None, text) -> str:
    return "-" if r is None else text(r)


def report(first: RunStats, warm: RunStats | None, helps: list, *,
           first_label: str = "first (empty cache)") -> None:
    """The table: both runs side by side (warm None: the smoke test's single run)."""
    def row(label, cell):
        print(f"  {label:34} {_pair(first, cell):>22} {_pair(warm, cell):>22}")

    def first_and_later(values):
        return f"{values[0]:.3f} / {_later(values):.4f}" if values else "-"

    print(f"  {'':34} {first_label:>22} {'warm cache':>22}")
    row("training s (compile included)", lambda r: f"{r.training_s:.1f}")
    row("  of which tracking s", lambda r: f"{r.tracking_s:.1f}")
    row("command wall s", lambda r: f"{r.wall_s:.1f}")
    row("numba compiled: functions, s",
        lambda r: f"{len(r.compiles)}, {sum(s for _, s in r.compiles):.2f}")
    row("loaded from cache: functions, s",
        lambda r: f"{len(r.loads)}, {sum(s for _, s in r.loads):.2f}")
    row("epoch 1 s / median later epoch s", lambda r: first_and_later(r.epochs))
    row("1st evaluation s / median later s", lambda r: first_and_later(r.evals))
    for label, r in (("first", first), ("warm", warm)):
        for what, done in (("compiled", r and r.compiles), ("loaded", r and r.loads)):
            if done:
                print(f"  {label} run {what}: " + ", ".join(f"{n} {s:.2f} s" for n, s in done))
    verdict = "met" if first.training_s <= TARGET_S else "NOT met"
    print(f"first-run training {first.training_s:.1f} s against the target of <= {TARGET_S:.0f} s: "
          f"{verdict}")
    if helps:
        print(f"cli.py --help: median {statistics.median(helps):.2f} s of {len(helps)} "
              f"({', '.join(f'{h:.2f}' for h in helps)}); target < {HELP_TARGET_S} s")


def parse_args(argv: list | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=MAMMALS)
    p.add_argument("--epochs", type=int, default=None,
                   help="override the default 300 (the compile does not depend on it)")
    p.add_argument("--help-repeats", type=int, default=5, help="timings of cli.py --help")
    p.add_argument("--smoke", action="store_true",
                   help="for tests/test_benchmarks_smoke.py: one 2-epoch run with numba's default "
                        "cache (__pycache__, warm after any test that trained), --help once")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.help_repeats = 2, 1
    return args


def main(argv: list | None = None) -> tuple:
    args = parse_args(argv)
    cli_args = list(MAKE_TRAIN)
    if args.epochs is not None:
        cli_args += ["--epochs", str(args.epochs), "--burnin", str(min(30, max(args.epochs - 1, 0)))]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); load average {_load()}; "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="hype-first-run-") as tmp:
        tmp = Path(tmp)
        cache = None if args.smoke else tmp / "numba-cache"  # empty: a fresh clone's
        first = run_train(tmp, "first", cache, args.dataset, cli_args)
        print(f"first run done; load average {_load()}")
        warm = None
        if not args.smoke:
            warm = run_train(tmp, "warm", cache, args.dataset, cli_args)
            print(f"warm run done; load average {_load()}")
    helps = time_help(args.help_repeats)
    print(f"{args.dataset.name}, cli.py train {' '.join(cli_args)} --quiet")
    report(first, warm, helps,
           first_label="smoke (default cache)" if args.smoke else "first (empty cache)")
    print(f"load average at the end {_load()}")
    return first, warm, helps


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        _child(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
