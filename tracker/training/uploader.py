"""Checkpoints stored off the training thread: one worker, in order, with a small bound.

The training thread hands each epoch's checkpoint (a snapshot: the embedding cloned, the RNG
state and the policies' inputs as they were) to ``submit`` and goes on with the next epoch. The
worker runs the same lifecycle the synchronous path runs, step by step and in epoch order:
save (temp file, fsync, model, metrics, manifest row, rename) -> upload -> confirm -> record ->
model READY -> retention (tracked, then local) -> bookkeeping. So every guarantee of that path
holds as it did: nothing is deleted before its successor is confirmed stored, and a kill at any
moment leaves what a kill of the synchronous path leaves (a queued checkpoint that was never
saved is simply an epoch without a checkpoint; resume goes on from the newest stored one).

Bounded: at most ``bound`` checkpoints wait (default 2: memory for two snapshots, no more).
When every slot is taken, ``submit`` asks ``choose`` (tracker.policy.supersede) which waiting
job the new one may replace: that job is dropped, and the job that runs next in its place (the
next waiting one, else the new one) takes over what it carried (its epoch's metrics). When
none may be replaced, ``submit`` blocks at the bound and says so once. The first failure in
the worker stops it; ``submit`` and ``drain`` raise it on the training thread, where the run is
marked as the synchronous path would have marked it.

When training keeps every core busy (as many ranks as cores), the worker yields to it
(``yield_cores``): it runs at the idle scheduling class (SCHED_IDLE, else nice 19), so it takes
only the cycles the ranks leave, at barriers and while rank 0 evaluates, and the waiting
checkpoints are replaced in between. Two bounds keep that from starving the store: the oldest
epoch not yet stored may be at most ``max_lag_s`` old (past it, ``submit`` waits until it is
stored: a waiting training thread leaves its core to the worker), and ``drain`` runs what is
left on the calling thread, after the worker's current job, at the caller's priority.

Paced (``duty``, only when yielding): on a machine with no spare core, whatever the worker
spends the ranks lose, most of it even at the idle class (tracking_overhead.py measured 3/4). So
the worker starts a job no sooner than the previous job's cost / ``duty`` after that one started:
the cost is the job's wall time less its wait for a core (a server's response counts, being
starved does not), the interval at most a third of ``max_lag_s``. Checkpoints that arrive in
between are replaced as at the bound (supersede: only those no policy but newest N keeps), so
the store gets one checkpoint per interval and every epoch's metrics. Orbax's continuous
checkpointing does the same with a fixed minimum interval. The pace gives way whenever
``submit`` would wait (every waiting checkpoint kept), and ``drain`` ignores it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol


class Job(Protocol):
    def __call__(self) -> None: ...

    def absorb(self, older: Job) -> None:
        """Take over what a replaced (older, never started) job would have written."""


def yield_to_others() -> str:
    """Lower the calling thread's scheduling priority as far as it goes; say to what. Linux
    applies both calls to the thread alone (pid 0 / a thread id), not to the process."""
    if sys.platform != "linux":
        return "normal priority"
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return "nice 19"
    except OSError:
        return "normal priority"


def _waited_for_a_core_ns() -> int | None:
    """The calling thread's time runnable but not running, in ns (Linux schedstat), or None."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


class CheckpointQueue:
    def __init__(self, bound: int, *, say: Callable[[str], None], name: str = "hype-uploader",
                 yield_cores: bool = False, max_lag_s: float | None = None,
                 duty: float | None = None):
        if bound < 1:
            raise ValueError(f"the upload queue bound must be >= 1, got {bound}")
        self.bound = bound
        self._say = say
        self.yield_cores = yield_cores
        self.max_lag_s = max_lag_s  # the oldest unstored epoch's age at which submit waits
        self.duty = duty if yield_cores else None  # the worker's share of one core, when yielding
        self.max_interval_s = (max_lag_s or 30.0) / 3  # the pace's longest gap between two jobs
        self._not_before = 0.0  # monotonic time before which the paced worker starts no job
        self._blocked = 0  # submits now waiting (the bound, the lag): the pace gives way
        self.paced_s = 0.0  # the longest interval the pace set, for the run's summary
        self.priority = "normal priority"  # the worker's, once it has started
        self._waiting: deque = deque()  # [job, handed-over time of its oldest epoch], oldest first
        self._running_since: float | None = None  # the running job's oldest epoch's hand-over
        self._running = False
        self._paused = False  # drain runs the jobs on its own thread: the worker takes none
        self._stopping = False
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._said: set[str] = set()  # the waits' messages, each said once
        self.waited_s = 0.0  # time the training thread spent blocked (the bound, the lag)
        self.replaced = 0  # jobs dropped for a newer one while every slot was taken
        self.lag_waits = 0  # times submit waited for the oldest unstored epoch (max_lag_s)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        if self.yield_cores:
            self.priority = yield_to_others()
        while True:
            with self._cond:
                while not self._ready() and not self._stopping:
                    self._cond.wait(self._pace_left())
                if not self._waiting or self._paused:
                    return  # stopping, and nothing left (or drain has taken them)
                job = self._start_next()
            self._run(job)

    def _ready(self) -> bool:
        """(Holding the lock.) A job waits, drain has not taken over, and the pace allows it."""
        return bool(self._waiting) and not self._paused and (
            self._blocked > 0 or time.monotonic() >= self._not_before)

    def _pace_left(self) -> float | None:
        """(Holding the lock.) Seconds the worker may sleep before the pace lets it start."""
        if not self._waiting or self._paused or self._blocked:
            return None
        return max(self._not_before - time.monotonic(), 0.0)

    def _start_next(self) -> Job:
        """(Holding the lock.) Take the oldest waiting job; its slot is free."""
        job, self._running_since = self._waiting.popleft()
        self._running = True
        self._cond.notify_all()
        return job

    def _run(self, job: Job) -> None:
        t0, waited0 = time.monotonic(), _waited_for_a_core_ns()
        try:
            if self._error is None:  # after a failure, queued jobs are dropped, in order
                job()
        except BaseException as e:  # noqa: BLE001 - handed to the training thread as is
            self._error = e
        finally:
            cost = time.monotonic() - t0
            waited1 = _waited_for_a_core_ns()
            if waited0 is not None and waited1 is not None:
                cost -= (waited1 - waited0) / 1e9
            with self._cond:
                self._running, self._running_since = False, None
                if self.duty:
                    interval = min(max(cost, 0.0) / self.duty, self.max_interval_s)
                    self._not_before = t0 + interval
                    self.paced_s = max(self.paced_s, interval)
                self._cond.notify_all()

    def _oldest(self) -> float | None:
        """(Holding the lock.) When the oldest epoch not yet stored was handed over."""
        times = [since for _, since in self._waiting]
        if self._running_since is not None:
            times.append(self._running_since)
        return min(times, default=None)

    def _lagging(self) -> bool:
        oldest = self._oldest()
        return (self.max_lag_s is not None and oldest is not None
                and time.monotonic() - oldest > self.max_lag_s and self._error is None)

    def check(self) -> None:
        """Raise the worker's failure, if any, on the calling (training) thread."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Job, choose: Callable[[Sequence[Job]], tuple[int | None, str]] | None = None,
               ) -> None:
        """Queue ``job``. At the bound, ``choose(waiting)`` -> (index of the waiting job ``job``
        replaces, or None; why); without ``choose``, or with None, wait for a free slot."""
        self.check()
        entry = [job, time.monotonic()]  # the job, and when its oldest epoch was handed over
        with self._cond:
            if len(self._waiting) >= self.bound and choose is not None:
                index, why = choose([j for j, _ in self._waiting])
                if index is not None:
                    # What the replaced job would have written goes to the job that runs next in
                    # its place: the next waiting one, else the new one. So no checkpoint is
                    # stored before the metrics of every earlier epoch are (a kill between the
                    # two would resume past epochs whose metrics the store never got).
                    older, older_since = self._waiting[index]
                    heir = self._waiting[index + 1] if index + 1 < len(self._waiting) else entry
                    heir[0].absorb(older)
                    heir[1] = min(heir[1], older_since)
                    del self._waiting[index]
                    if self.replaced == 0:
                        busy = ("the uploader is paced to a small share of the cores the ranks take"
                                if self.duty and not self._running else "the tracking store is busy")
                        self._say(f"Training goes on while {busy}: {why} (said once; the count is "
                                  "given at the end)")
                    self.replaced += 1
            if len(self._waiting) >= self.bound:
                self._wait_while(lambda: len(self._waiting) >= self.bound and self._error is None,
                                 f"Training waits for the tracking store: {self.bound} checkpoints are "
                                 "queued (it is slower than training; said once)")
            if self._lagging():
                self.lag_waits += 1
                self._wait_while(self._lagging, "Training waits for the tracking store to catch up: "
                                 f"its oldest unstored epoch is over {self.max_lag_s:g} s old (said once)")
            self._waiting.append(entry)
            self._cond.notify_all()
        self.check()

    def _wait_while(self, blocked: Callable[[], bool], message: str) -> None:
        """(Holding the lock.) Block the training thread while ``blocked()``; say ``message`` the
        first time. Each finished job notifies, and so does a failure."""
        if message not in self._said:
            self._say(message)
            self._said.add(message)
        t0 = time.perf_counter()
        self._blocked += 1  # the pace gives way: training is waiting
        self._cond.notify_all()
        try:
            while blocked():
                self._cond.wait()
        finally:
            self._blocked -= 1
        self.waited_s += time.perf_counter() - t0

    def drain(self) -> None:
        """Store every queued checkpoint and retain; raise the worker's failure. The worker
        finishes its current job; the rest run here, in order, at this thread's priority (the
        worker's may be the idle class, which a busy machine would starve)."""
        with self._cond:
            self._paused = True
            while self._running:
                self._cond.wait()
        try:
            while True:
                with self._cond:
                    if not self._waiting:
                        break
                    job = self._start_next()
                self._run(job)
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()
        self.check()

    def close(self) -> None:
        """Stop the worker after the queued jobs (call drain first to see their failures)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._waiting) + int(self._running)
