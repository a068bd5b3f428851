"""Compiling the evaluator beside the start of a first run, in a helper process.

On an empty numba cache a run compiles two kernels, one after the other: the training pass in
its first epoch, the evaluator in its first evaluation (2.3-3.3 s each on a 2-core VM;
benchmarks/first_run.py). numba compiles under one lock per process, so the two cannot overlap
in one. When the evaluator is not cached yet, `python cli.py train` starts this module as a
helper before it opens the tracking store: the helper compiles the evaluator's one signature
into the cache (under hype.jit's file lock) while the trainer starts, and the first evaluation
waits for that lock, if at all, then loads the kernel. With the cache warm nothing is started.

    python -P -m hype.warmup poincare
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

from hype import processes

STOP_WAIT_S = 5.0  # a helper still compiling when the run ends early is stopped after this


def start(manifold: str) -> subprocess.Popen | None:
    """The helper compiling `manifold`'s evaluator, or None when it is cached (or cannot be
    checked: the first evaluation then compiles it, as it would have)."""
    from hype import evaluate

    if evaluate.evaluator_cached(manifold):
        return None
    try:
        return subprocess.Popen(processes.module_command("hype.warmup", manifold),
                                env=processes.module_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None  # no helper: only slower


def stop(helper: subprocess.Popen | None) -> None:
    """Reap the helper: by the end of a run it has long finished; when a run fails early it may
    still be compiling, and is stopped (numba writes its cache files atomically, and the file
    lock goes with the process)."""
    if helper is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        helper.wait(timeout=STOP_WAIT_S)  # at once when it has finished
        return
    helper.kill()
    helper.wait()


@contextlib.contextmanager
def evaluator_beside(manifold: str, backend: str):
    """Around a new run: the helper runs while the run starts, and is reaped at its end."""
    helper = start(manifold) if backend == "numba" else None
    try:
        yield helper
    finally:
        stop(helper)


def main(argv: list[str]) -> int:
    from hype import evaluate

    if len(argv) != 1:
        print("usage: python -m hype.warmup MANIFOLD", file=sys.stderr)
        return 2
    try:
        evaluate.precompile(argv[0])
    except ValueError as e:  # an unknown manifold
        print(f"hype.warmup: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
