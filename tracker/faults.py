"""Fault injection for crash tests: die by SIGKILL at a named moment of the checkpoint cycle.

With HYPE_FAULT=<point>:<N> in the environment, the N-th call of point("<point>") in this
process kills the process with SIGKILL, exactly as `kill -9` would: no finally blocks, no
atexit, no flushing. Without HYPE_FAULT (always, outside tests) point() only compares a
module constant with None: the variable is read once, at import.

The points, in the order an epoch reaches them:
- "epoch": end of on_epoch_end (metrics logged, checkpoint not yet written);
- "save": in save_atomic, temporary file written and fsynced, not yet renamed;
- "upload": the store has the checkpoint, the run has not yet marked it stored;
- "delete": retention deleted the tracked copy, the local copy is not yet unlinked.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "HYPE_FAULT"
POINTS = ("epoch", "save", "upload", "delete")


def parse(value: str | None) -> tuple[str, int] | None:
    """"save:3" -> ("save", 3); None or "" -> None. Anything else is a ValueError naming it."""
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={value!r}: expected <point>:<N> with point one of "
                         f"{', '.join(POINTS)} and N >= 1 (e.g. save:3)")
    return name, int(count)


_TARGET = parse(os.environ.get(ENV))
_reached = 0  # how many times the target point was reached in this process


def point(name: str) -> None:
    """Mark a fault point; SIGKILL this process if HYPE_FAULT names it and this is the N-th time."""
    global _reached
    if _TARGET is None or name != _TARGET[0]:
        return
    _reached += 1
    if _reached == _TARGET[1]:
        # One line on stderr first, so a harness can tell a planned kill from a crash.
        sys.stderr.write(f"{ENV}: SIGKILL at {name} #{_reached}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
