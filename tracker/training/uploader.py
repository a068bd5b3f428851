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
job the new one may replace: that job is dropped and the new one takes over what it carried
(its epoch's metrics). When none may be replaced, ``submit`` blocks at the bound and says so
once. The first failure in the worker stops it; ``submit`` and ``drain`` raise it on the
training thread, where the run is marked as the synchronous path would have marked it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol


class Job(Protocol):
    def __call__(self) -> None: ...

    def absorb(self, older: Job) -> None:
        """Take over what a replaced (older, never started) job would have written."""


class CheckpointQueue:
    def __init__(self, bound: int, *, say: Callable[[str], None], name: str = "hype-uploader"):
        if bound < 1:
            raise ValueError(f"the upload queue bound must be >= 1, got {bound}")
        self.bound = bound
        self._say = say
        self._waiting: deque = deque()  # jobs not started, oldest first
        self._running = False
        self._stopping = False
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._warned = False
        self.waited_s = 0.0  # time the training thread spent blocked at the bound
        self.replaced = 0  # jobs dropped for a newer one while every slot was taken
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return  # stopping, and nothing left
                job = self._waiting.popleft()
                self._running = True
                self._cond.notify_all()  # a slot is free
            try:
                if self._error is None:  # after a failure, queued jobs are dropped, in order
                    job()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread as is
                self._error = e
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

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
        with self._cond:
            if len(self._waiting) >= self.bound and choose is not None:
                index, why = choose(list(self._waiting))
                if index is not None:
                    job.absorb(self._waiting[index])
                    del self._waiting[index]
                    if self.replaced == 0:
                        self._say(f"Training goes on while the tracking store is busy: {why} (said "
                                  "once; the count is given at the end)")
                    self.replaced += 1
            if len(self._waiting) >= self.bound:
                if not self._warned:
                    self._say(f"Training waits for the tracking store: {self.bound} checkpoints are "
                              "queued (it is slower than training; said once)")
                    self._warned = True
                t0 = time.perf_counter()
                while len(self._waiting) >= self.bound and self._error is None:
                    self._cond.wait()
                self.waited_s += time.perf_counter() - t0
            self._waiting.append(job)
            self._cond.notify_all()
        self.check()

    def drain(self) -> None:
        """Wait until every queued checkpoint is stored and retained; raise the worker's failure."""
        with self._cond:
            while self._waiting or self._running:
                self._cond.wait()
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
