"""Epoch clocks for benchmarks/tracking_overhead.py: hype.train callbacks that stamp each epoch,
track every other block of epochs, and read how long the training threads waited for a core."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import NamedTuple


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
    thread of its child processes that run hype.rank (the other ranks; not a local mlflow
    server or the compile helper, which are children too)."""
    main = threading.main_thread().native_id
    files = [Path(f"/proc/self/task/{main}/schedstat")]
    for task in Path("/proc/self/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:  # it has ended
                continue
            if b"hype.rank" in argv:
                files += sorted(Path(f"/proc/{child}/task").glob("*/schedstat"))
    return files


class Sample(NamedTuple):
    """Cumulative seconds at one stamp: of the training threads (Linux schedstat), and of all
    CPUs (/proc/stat's first line)."""
    waited: float  # the training threads runnable but waiting for a core: what others took
    ran: float  # the training threads on a core
    busy: float  # all CPUs running anything: user, nice, system, irq, softirq
    kernel: float  # of which in the kernel: system, irq, softirq
    steal: float  # all CPUs given by the hypervisor to other VMs


def sample(files: list[Path]) -> Sample:
    """One read of each training thread's schedstat and of /proc/stat."""
    ran = waited = 0
    for f in files:
        try:
            fields = f.read_text().split()
            ran, waited = ran + int(fields[0]), waited + int(fields[1])
        except (OSError, IndexError, ValueError):  # a thread that has ended
            pass
    cpu = [int(x) / os.sysconf("SC_CLK_TCK")
           for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = cpu
    return Sample(waited / 1e9, ran / 1e9, user + nice + system + irq + softirq,
                  system + irq + softirq, steal)


def shares(walls: list[float], samples: list[Sample], epochs: list[int], skip: int) -> dict[str, float]:
    """Of ``epochs``' wall time (1-based; samples[k] taken at the end of epoch skip + k): the share
    the ranks waited for a core (summed over ranks, so 2 ranks waiting all along is 200%), ran on
    one (summed likewise: the rest of ranks x wall they slept, at a collective or for the GIL), what ran
    beside them (all CPUs less the ranks' own time on a core) and its kernel part (which includes
    the ranks' own system calls), and the VM's steal."""
    wall = sum(walls[e - 1] for e in epochs)
    spent = Sample(*(sum(samples[e - skip][f] - samples[e - skip - 1][f] for e in epochs) / wall
                     for f in range(len(Sample._fields))))
    return {"wait": spent.waited, "ran": spent.ran, "steal": spent.steal,
            "other": spent.busy - spent.ran, "kernel": spent.kernel}


class Sampled(Stamps):
    """Stamps that also sample the ranks' schedstat and /proc/stat at the end of each epoch from
    ``skip`` on: a whole run's shares, to set one run against another (Blocks does it in one)."""

    def __init__(self, inner=None, skip: int = 1):
        super().__init__(inner)
        self.skip = skip
        self.samples: list[Sample] = []  # at the end of epoch skip, skip + 1, ...
        self._files: list[Path] | None = None

    def _sample(self) -> None:
        if self._files is None:
            self._files = _rank_threads()
        self.samples.append(sample(self._files))

    def on_checkpoint(self, state):
        super().on_checkpoint(state)
        if state.epoch == self.skip:
            self.samples = []
        if state.epoch >= self.skip:
            self._sample()

    def shares(self) -> dict[str, float]:
        """Over the epochs after skip, the last (which evaluates) left out."""
        epochs = list(range(self.skip + 1, len(self.samples) + self.skip - 1))
        return shares(self.walls, self.samples, epochs, self.skip)


class Blocks(Sampled):
    """Tracks only every other block of ``block`` epochs (after ``skip``, which are tracked: the
    tracker's first checkpoints and deletions), so that tracked and untracked epochs of one run,
    on the same ranks and memory, alternate every few seconds."""

    def __init__(self, inner, skip: int, block: int):
        super().__init__(inner, skip)
        self.block = block

    def tracks(self, epoch: int) -> bool:
        return epoch <= self.skip or ((epoch - self.skip - 1) // self.block) % 2 == 1

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
        """shares() of the timed tracked epochs and of the untracked ones, as tracked_wait,
        untracked_wait, tracked_other, ..."""
        out = {}
        for label, on in (("tracked", True), ("untracked", False)):
            epochs = [e for e in range(self.skip + 1, len(self.samples) + self.skip)
                      if self._timed(e) and self.tracks(e) == on]
            out.update({f"{label}_{k}": v for k, v in shares(self.walls, self.samples, epochs,
                                                             self.skip).items()})
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
