"""Ctrl+C that never tears a tracking write in half.

Python raises KeyboardInterrupt at whatever bytecode runs when SIGINT arrives. In the middle
of a store write that can leave a SQLite transaction open (its lock then outlives the
exception, held by the traceback's frames, so marking the run KILLED times out), or a tracked
checkpoint deleted while its local copy stays. So while a tracking section runs, SIGINT only
sets a flag; the KeyboardInterrupt is raised when the section ends, between two epochs'
bookkeeping, where a resume picks up cleanly. Training itself (the compute) stays interruptible
at once, and a second Ctrl+C during a section aborts at once, for users who mean it.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

_depth = 0  # nesting of open tracking sections (main thread only)
_pending = False  # SIGINT arrived inside a section, not raised yet
_installed = False


def _handler(signum, frame):
    global _pending
    if _depth and not _pending:
        _pending = True
        sys.stderr.write("\nInterrupted: finishing the tracking write in progress "
                         "(Ctrl+C again to abort at once)\n")
        sys.stderr.flush()
        return
    raise KeyboardInterrupt


@contextmanager
def deferred():
    """Install the deferring SIGINT handler for the block (main thread only; elsewhere a no-op)."""
    global _installed, _pending
    if threading.current_thread() is not threading.main_thread() or _installed:
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    _installed, _pending = True, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _installed = False


@contextmanager
def section(*, raise_at_end: bool = True):
    """A tracking write: SIGINT inside it is raised as KeyboardInterrupt when it ends, or, with
    raise_at_end=False (the run's last writes, after which there is nothing left to interrupt),
    left for the caller to see with take_pending()."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    # Only on a normal exit: an exception already unwinding wins over the deferred interrupt.
    if raise_at_end and not _depth and _pending:
        _pending = False
        raise KeyboardInterrupt


def take_pending() -> bool:
    """Whether a deferred SIGINT is waiting (and forget it)."""
    global _pending
    was, _pending = _pending, False
    return was
