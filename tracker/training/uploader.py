"""Checkpoints stored off the training thread: one worker, in order, with a small bound.

The training thread hands each epoch's checkpoint (a snapshot: the embedding cloned, the RNG
state and the policies' inputs as they were) to ``submit`` and goes on with the next epoch. The
worker runs the same lifecycle the synchronous path runs, step by step and in epoch order:
save (temp file, fsync, manifest row, rename) -> upload -> confirm -> record -> checkpoint model
-> retention (tracked, then local) -> bookkeeping. So every guarantee of that path holds as it
did: nothing is deleted before its successor is confirmed stored, and a kill at any moment
leaves what a kill of the synchronous path leaves (a queued checkpoint that was never saved is
simply an epoch without a checkpoint; resume goes on from the newest stored one).

Bounded: at most ``bound`` checkpoints wait (default 2: memory for two snapshots, no more).
When the store is slower than training, ``submit`` blocks at the bound and says so once. The
first failure in the worker stops it; ``submit`` and ``drain`` raise it on the training thread,
where the run is marked as the synchronous path would have marked it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

_STOP = object()


class CheckpointQueue:
    def __init__(self, bound: int, *, say: Callable[[str], None], name: str = "hype-uploader"):
        if bound < 1:
            raise ValueError(f"the upload queue bound must be >= 1, got {bound}")
        self.bound = bound
        self._say = say
        self._jobs: queue.Queue = queue.Queue(maxsize=bound)
        self._error: BaseException | None = None
        self._warned = False
        self.waited_s = 0.0  # time the training thread spent blocked at the bound
        self.done = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:  # after a failure, queued jobs are dropped, in order
                    job()
                    self.done += 1
            except BaseException as e:  # noqa: BLE001 - handed to the training thread as is
                self._error = e
            finally:
                self._jobs.task_done()

    def check(self) -> None:
        """Raise the worker's failure, if any, on the calling (training) thread."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        self.check()
        try:
            self._jobs.put_nowait(job)
            return
        except queue.Full:
            pass
        if not self._warned:
            self._say(f"Training waits for the tracking store: {self.bound} checkpoints are queued "
                      "(it is slower than training; said once)")
            self._warned = True
        t0 = time.perf_counter()
        self._jobs.put(job)
        self.waited_s += time.perf_counter() - t0
        self.check()

    def drain(self) -> None:
        """Wait until every queued checkpoint is stored and retained; raise the worker's failure."""
        self._jobs.join()
        self.check()

    def close(self) -> None:
        """Stop the worker after the queued jobs (call drain first to see their failures)."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()

    @property
    def pending(self) -> int:
        return self._jobs.unfinished_tasks
