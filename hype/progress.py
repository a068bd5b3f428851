"""Progress that reads well on a terminal and in a log file; every bar of hype is made here.

On a terminal: a tqdm bar, redrawn in place. Anywhere else (a pipe, `make train > log 2>&1`,
CI) a bar's carriage-return repaints would fill the file with hundreds of kilobytes, so there is
no bar but a plain line now and then, e.g.

    epoch 40/300 loss 0.1234 map 0.912 (12.3 s)

A line is due every `every_s` seconds, and (when given) every `every_fraction` of the total.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

EVERY_S = 10.0  # a log gets at least one line this often while work goes on


def on_terminal(stream) -> bool:
    """Whether `stream` is a terminal that a bar can redraw in place."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


@dataclass
class LineSchedule:
    """When the next plain line is due. Pure: the caller passes the count and the time."""

    total: int | None
    every_s: float | None = EVERY_S
    every_fraction: float | None = None  # 0.1: a line at 10%, 20%, ... of total
    last_n: int = 0  # count at the last line (or at the start)
    last_s: float = 0.0  # elapsed seconds at the last line (or at the start)

    def due(self, n: int, elapsed_s: float) -> bool:
        if n <= self.last_n:
            return False
        if self.every_s is not None and elapsed_s - self.last_s >= self.every_s:
            return True
        if self.every_fraction and self.total:
            step = max(1, round(self.total * self.every_fraction))
            return n // step > self.last_n // step
        return False

    def mark(self, n: int, elapsed_s: float) -> None:
        self.last_n, self.last_s = n, elapsed_s


def progress_line(label: str, n: int, total: int | None, postfix: dict, elapsed_s: float) -> str:
    """`epoch 40/300 loss 0.1234 map 0.912 (12.3 s)`: the count, then postfix as `key value`."""
    count = f"{n}/{total}" if total else str(n)
    fields = "".join(f" {k} {v}" for k, v in postfix.items())
    return f"{label} {count}{fields} ({elapsed_s:.1f} s)"


class LineProgress:
    """The part of tqdm's interface hype uses (iterate, update, set_postfix, close, `with`),
    written as plain lines on LineSchedule's schedule; with `last_line`, close() also writes
    the final count when no line has named it yet (a run that stopped early)."""

    def __init__(self, iterable=None, *, total: int | None, initial: int = 0, label: str,
                 every_s: float | None = EVERY_S, every_fraction: float | None = None,
                 last_line: bool = False, file=None, clock=time.monotonic):
        self.iterable, self.total, self.n, self.label = iterable, total, initial, label
        self.last_line, self.file, self.clock = last_line, file, clock
        self.postfix: dict = {}
        self.schedule = LineSchedule(total, every_s, every_fraction, last_n=initial)
        self.start = clock()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, refresh: bool = True, **postfix) -> None:
        self.postfix = postfix  # replaced, as tqdm does

    def update(self, n: int = 1) -> None:
        self.n += n
        elapsed = self.clock() - self.start
        if self.schedule.due(self.n, elapsed):
            self._write(elapsed)

    def close(self) -> None:  # nothing to erase: every line stays
        if self.last_line and self.n > self.schedule.last_n:
            self._write(self.clock() - self.start)

    def _write(self, elapsed: float) -> None:
        self.schedule.mark(self.n, elapsed)
        out = self.file or sys.stderr  # looked up now: the stream may have been replaced since
        out.write(progress_line(self.label, self.n, self.total, self.postfix, elapsed) + "\n")
        out.flush()


def bar(iterable=None, *, total: int | None, desc: str, unit: str, label: str | None = None,
        enabled: bool = True, every_fraction: float | None = None, last_line: bool = False,
        file=None, **tqdm_options):
    """A tqdm bar on a terminal; elsewhere plain lines labelled `label` (default: `desc`);
    nothing at all when not `enabled`."""
    if enabled and not on_terminal(file or sys.stderr):
        return LineProgress(iterable, total=total, initial=tqdm_options.get("initial", 0),
                            label=label or desc, every_fraction=every_fraction,
                            last_line=last_line, file=file)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=file,
                **tqdm_options)
