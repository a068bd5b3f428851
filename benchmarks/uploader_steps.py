"""Where the uploader's CPU goes, step by step, per noun checkpoint (issue 14).

    .venv/bin/python benchmarks/uploader_steps.py                 # SQLite, 2 workers, 14 epochs
    .venv/bin/python benchmarks/uploader_steps.py --server        # through a local mlflow server

A tracked noun run (the tracking_overhead.py settings) whose checkpoint job is timed step by
step with the uploader thread's own CPU clock (time.thread_time: user + kernel of that thread
alone, so the ranks and the load do not enter). Prints each step's median per checkpoint and
its share. On 2 cores with 2 ranks there is no spare core: what the uploader spends, the ranks
lose, less what it finds at their barriers, so this is the budget the targets are made of.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.epoch_clock import Stamps  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.tracking_overhead import run_tracked  # noqa: E402

SPENT: dict[str, list[float]] = defaultdict(list)  # step -> thread CPU seconds per checkpoint job
_job: dict[str, float] | None = None  # the running job's steps so far (uploader thread only)


def timed(owner, attr: str, label: str) -> None:
    """Wrap owner.attr so that its thread CPU time, inside a checkpoint job, adds to the job's
    ``label``; the whole job's wrapper files each job's sums in SPENT."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a, **k):
        global _job
        outer = label == "whole job"
        if outer:
            _job = defaultdict(float)
        elif _job is None or threading.current_thread().name != _thread:
            return fn(*a, **k)
        t0 = time.thread_time()
        _stack.append(label)
        try:
            return fn(*a, **k)
        finally:
            _stack.pop()
            _job[label] += time.thread_time() - t0
            if _statements is not None:
                _job[f"{label} [SQL statements]"] += _statements.pop(label, 0)
            if outer:
                for key, value in _job.items():
                    SPENT[key].append(value)
                _job = None

    setattr(owner, attr, wrapper)
    _patched.append((owner, attr, fn))


_patched: list[tuple[object, str, object]] = []  # (owner, attribute, original): undone by main


_thread = "hype-uploader"
_statements: dict[str, int] | None = None  # label -> SQL statements sent (SQLite only)
_stack: list[str] = []  # the labels of the wrapped calls now running on the uploader


def count_statements() -> None:
    """Count each SQL statement the uploader sends against the innermost wrapped step."""
    global _statements
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _statements = defaultdict(int)

    def _count(conn, cursor, statement, parameters, context, executemany):
        if _stack and threading.current_thread().name == _thread:
            _statements[_stack[-1]] += 1

    event.listen(Engine, "before_cursor_execute", _count)
    _undo.append(lambda: event.remove(Engine, "before_cursor_execute", _count))


_undo: list = []  # how to take the statement counter off again


def instrument() -> None:
    from tracker.checkpoints import files, manifest
    from tracker.training import retain, storing

    timed(storing.StoringPass, "_store_checkpoint", "whole job")
    timed(files, "_save_without_crc32", "torch.save + its SHA-256")
    timed(files.os, "fsync", "fsync (file and folder)")
    timed(storing.StoringPass, "_begin_model", "create_logged_model")
    timed(storing.StoringPass, "_log_epoch", "log_batch (metrics + tags)")
    timed(manifest.Manifest, "record", "manifest row")
    timed(manifest.Manifest, "set_state", "manifest state")
    timed(storing.StoringPass, "_upload", "upload + confirming listing")
    timed(storing.StoringPass, "_complete_model", "model files + finalize + outputs")
    timed(retain.RetentionPass, "apply_retention", "retention (tracked, then local)")


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=ROOT / "data" / "noun_closure.csv")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--server", action="store_true", help="a local mlflow server instead of SQLite")
    args = p.parse_args(argv)

    from nouns import CLOSURE, ensure_closure

    if args.dataset == CLOSURE:
        ensure_closure(CLOSURE)
    from hype.config import TrainConfig
    from hype.data import load_edge_csv

    instrument()
    if not args.server:
        count_statements()
    graph = load_edge_csv(args.dataset)
    config = TrainConfig(dim=args.dim, lr=1.0, batch_size=50, negs=50, burnin=0, epochs=args.epochs,
                         eval_every=args.epochs, eval_sample=100, workers=args.workers)
    print(f"{graph.num_nodes:,} nodes, dim {args.dim}, {args.epochs} epochs, {args.workers} workers; "
          f"{cpu_model()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        if args.server:
            from tests.servers import mlflow_server

            uri = stack.enter_context(mlflow_server(tmp / "server")).url
        else:
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
        try:
            run_tracked(graph, config, uri, tmp, 2, None, "steps", Stamps)
        finally:  # the wrappers go, so that a test process that imported this is left as it was
            for owner, attr, fn in reversed(_patched):
                setattr(owner, attr, fn)
            _patched.clear()
            while _undo:
                _undo.pop()()
    jobs = SPENT.pop("whole job")[1:]  # the first job also stores the run's code zip
    whole = statistics.median(jobs)
    print(f"\nuploader CPU per checkpoint (median of {len(jobs)}): {1000 * whole:.1f} ms (steps nest: "
          "fsync is inside torch.save's file and the manifest's)")
    out = {}
    counts = {k.removesuffix(" [SQL statements]"): SPENT.pop(k) for k in list(SPENT) if k.endswith("]")}
    for label, xs in sorted(SPENT.items(), key=lambda kv: -statistics.median(kv[1][1:] or kv[1])):
        m = statistics.median(xs[1:] or xs)
        out[label] = m
        n = statistics.median(counts[label][1:] or counts[label]) if counts.get(label) else 0
        print(f"  {label:<36} {1000 * m:6.2f} ms  ({100 * m / whole:4.1f}%)"
              + (f"  {n:.0f} SQL statements" if n else ""))
    out["whole job"] = whole
    return out


if __name__ == "__main__":
    main()
