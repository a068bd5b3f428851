"""Fault injection for crash tests: die by SIGKILL at a named moment of the checkpoint cycle.

With HYPE_FAULT=<point>:<N> in the environment, the N-th call of point("<point>") in this
process kills the process with SIGKILL, exactly as `kill -9` would: no finally blocks, no
atexit, no flushing. HYPE_FAULT=<point>:<N>:INT sends SIGINT instead (a Ctrl+C landing at
exactly that moment). Without HYPE_FAULT (always, outside tests) point() only compares a
module constant with None: the variable is read once, at import.

The points, in the order an epoch reaches them:
- "epoch": end of on_epoch_end (stop decided; metrics not yet logged, checkpoint not written);
- "queued": the checkpoint is handed to the uploader (not necessarily saved yet; async only);
- "save": in save_atomic, temporary file written and fsynced; its model, the epoch's metrics
  and the manifest row not yet written, the file not yet renamed;
- "upload": the store has the checkpoint, the run has not yet marked it stored;
- "delete": retention deleted the tracked copy, the local copy is not yet unlinked.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "HYPE_FAULT"
POINTS = ("epoch", "queued", "save", "upload", "delete")


SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}


def parse(value: str | None) -> tuple[str, int, str] | None:
    """"save:3" -> ("save", 3, "KILL"); "delete:1:INT" -> ("delete", 1, "INT"); None or "" ->
    None. Anything else is a ValueError naming the points."""
    if not value:
        return None
    parts = value.split(":")
    if len(parts) == 2:
        parts.append("KILL")
    name, count, sig = parts if len(parts) == 3 else ("", "", "")
    if name not in POINTS or not count.isdigit() or int(count) < 1 or sig not in SIGNALS:
        raise ValueError(f"{ENV}={value!r}: expected <point>:<N>[:INT] with point one of "
                         f"{', '.join(POINTS)} and N >= 1 (e.g. save:3)")
    return name, int(count), sig


_TARGET = parse(os.environ.get(ENV))
_reached = 0  # how many times the target point was reached in this process


def point(name: str) -> None:
    """Mark a fault point; signal this process if HYPE_FAULT names it and this is the N-th time."""
    global _reached
    if _TARGET is None or name != _TARGET[0]:
        return
    _reached += 1
    if _reached == _TARGET[1]:
        # One line on stderr first, so a harness can tell a planned kill from a crash.
        sys.stderr.write(f"{ENV}: SIG{_TARGET[2]} at {name} #{_reached}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), SIGNALS[_TARGET[2]])
