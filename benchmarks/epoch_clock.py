"""Epoch clocks for benchmarks/tracking_overhead.py: hype.train callbacks that stamp each epoch,
track every other block of epochs, and read how long the training threads waited for a core."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class Stamps:
    """Callbacks that only take the time at the end of each epoch (what `no callbacks` costs)."""

    def __init__(self, inner=None):
        self.inner = inner
        self.stamps = [time.perf_counter()]
        self.train_s: list[float] = []  # the training pass of each epoch
        self.callback_s: list[float] = []  # the tracking callbacks of each epoch

    def tracks(self, epoch: int) -> bool:
        """Whether ``inner`` (the tracker) sees this epoch."""
        return self.inner is not None

    def on_epoch_end(self, result, state):
        self.train_s.append(result.seconds)
        self._t = time.perf_counter()
        return self.inner.on_epoch_end(result, state) if self.tracks(result.epoch) else None

    def on_checkpoint(self, state):
        if self.tracks(state.epoch):
            self.inner.on_checkpoint(state)
        now = time.perf_counter()
        self.callback_s.append(now - self._t)
        self.stamps.append(now)

    @property
    def walls(self) -> list[float]:
        """Each epoch's wall time, stamp to stamp (the epoch, its evaluation and its callbacks)."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]

    def epoch_walls(self, skip: int) -> list[float]:
        return self.walls[skip:-1]  # the last epoch also evaluates: not an ordinary epoch


def _rank_threads() -> list[Path]:
    """schedstat files of the training threads: this process's main thread (rank 0) and every
    thread of its child processes (the other ranks)."""
    main = threading.main_thread().native_id
    files = [Path(f"/proc/self/task/{main}/schedstat")]
    for task in Path("/proc/self/task").iterdir():
        for child in (task / "children").read_text().split():
            files += sorted(Path(f"/proc/{child}/task").glob("*/schedstat"))
    return files


def _schedstat_s(files: list[Path], field: int) -> float:
    total = 0
    for f in files:
        try:
            total += int(f.read_text().split()[field])
        except (OSError, IndexError, ValueError):  # a thread that has ended
            pass
    return total / 1e9


def run_delay_s(files: list[Path]) -> float:
    """Seconds these threads have spent runnable but waiting for a core (Linux schedstat's second
    field): the time something else on this machine took from training."""
    return _schedstat_s(files, 1)


def on_cpu_s(files: list[Path]) -> float:
    """Seconds these threads have run (schedstat's first field)."""
    return _schedstat_s(files, 0)


def _cpu_s(*columns: int) -> float:
    """Seconds of all CPUs in these columns of /proc/stat's first line (1 user, 2 nice, 3 system,
    4 idle, 5 iowait, 6 irq, 7 softirq, 8 steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return sum(int(fields[c]) for c in columns) / os.sysconf("SC_CLK_TCK")


def steal_s() -> float:
    """Seconds the hypervisor gave this VM's CPUs to others (all CPUs; /proc/stat's steal)."""
    return _cpu_s(8)


def busy_s() -> tuple[float, float]:
    """(seconds all CPUs ran anything, of which in the kernel: system, irq and softirq)."""
    return _cpu_s(1, 2, 3, 6, 7), _cpu_s(3, 6, 7)


class Blocks(Stamps):
    """Tracks only every other block of ``block`` epochs (after ``skip``, which are tracked: the
    tracker's first checkpoints and deletions), so that tracked and untracked epochs of one run,
    on the same ranks and memory, alternate every few seconds."""

    def __init__(self, inner, skip: int, block: int):
        super().__init__(inner)
        self.skip, self.block = skip, block
        self.delays: list[float] = []  # the ranks' run-queue delay, at each stamp
        self.steals: list[float] = []
        self.ran: list[float] = []  # the ranks' time on a core
        self.busy: list[tuple[float, float]] = []  # all CPUs' busy time, and its kernel part
        self._files: list[Path] | None = None

    def _sample(self) -> None:
        if self._files is None:
            self._files = _rank_threads()
        self.delays.append(run_delay_s(self._files))
        self.steals.append(steal_s())
        self.ran.append(on_cpu_s(self._files))
        self.busy.append(busy_s())

    def tracks(self, epoch: int) -> bool:
        return epoch <= self.skip or ((epoch - self.skip - 1) // self.block) % 2 == 1

    def on_checkpoint(self, state):
        super().on_checkpoint(state)
        if state.epoch == self.skip:
            self.delays, self.steals, self.ran, self.busy = [], [], [], []
        if state.epoch >= self.skip:
            self._sample()

    def _timed(self, epoch: int) -> bool:
        return epoch > self.skip and (epoch - self.skip - 1) % self.block != 0

    def split(self) -> tuple[list[float], list[float]]:
        """(tracked, untracked) epoch walls, without each block's first epoch: an untracked block's
        first epoch carries the last tracked one's background work, a tracked block's first has
        none of its predecessor's."""
        out: tuple[list[float], list[float]] = ([], [])
        for epoch, wall in enumerate(self.walls[:-1], start=1):
            if self._timed(epoch):
                out[0 if self.tracks(epoch) else 1].append(wall)
        return out

    def waited(self) -> dict[str, float]:
        """Of the timed epochs' wall time: the share the ranks waited for a core (summed over
        ranks, so 2 ranks waiting all along is 200%) and the VM's steal, tracked and untracked."""
        walls = self.walls
        out = {}
        for label, on in (("tracked", True), ("untracked", False)):
            epochs = [e for e in range(self.skip + 1, len(self.delays) + self.skip)
                      if self._timed(e) and self.tracks(e) == on]
            wall = sum(walls[e - 1] for e in epochs)
            i = [e - self.skip for e in epochs]  # delays[k] was sampled at the end of epoch skip + k
            out[f"{label}_wait"] = sum(self.delays[k] - self.delays[k - 1] for k in i) / wall
            out[f"{label}_steal"] = sum(self.steals[k] - self.steals[k - 1] for k in i) / wall
            # what ran beside the ranks (all CPUs, so 2 cores busy all along is 200%), and its
            # kernel part (which includes the ranks' own system calls)
            busy = sum(self.busy[k][0] - self.busy[k - 1][0] for k in i)
            ran = sum(self.ran[k] - self.ran[k - 1] for k in i)
            out[f"{label}_other"] = (busy - ran) / wall
            out[f"{label}_kernel"] = sum(self.busy[k][1] - self.busy[k - 1][1] for k in i) / wall
        return out


def idle_group(pgid: int) -> int:
    """Put every thread of process group ``pgid`` (a local tracking server) at the idle scheduling
    class, as `chrt --idle 0` would; returns how many threads. Linux only."""
    threads = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for task in (stat.parent / "task").iterdir():
                os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
                threads += 1
        except (OSError, ValueError, IndexError):  # a process that has ended meanwhile
            pass
    return threads
