"""Which waiting checkpoint a newer one replaces when the store is busy (tracker.policy.supersede),
and the uploader's queue that applies it: never a kept one, the newest replaceable one, its
metrics carried to the job that replaced it."""

from __future__ import annotations

import threading

import pytest

from tracker.policy.retention import BestK, EveryK, KeepAll, LatestN, Protect
from tracker.policy.retention import CheckpointRecord as R
from tracker.policy.supersede import replaceable
from tracker.training.uploader import CheckpointQueue


def recs(*epochs, values=None):
    values = values or {}
    return [R(e, f"m_epoch{e:04d}.pth", value=values.get(e)) for e in epochs]


def test_the_newest_waiting_one_that_only_newest_n_keeps_is_replaced():
    epoch, why = replaceable(recs(5, 6), recs(1, 2, 3, 4), recs(7)[0], [LatestN(20)])
    assert epoch == 6 and "replaced by epoch 7" in why


def test_the_best_is_never_replaced_but_the_one_before_it_is():
    values = {4: 0.5, 5: 0.6, 6: 0.9, 7: 0.7}
    policies = [LatestN(20), BestK(1, history=tuple(values.items()))]
    epoch, _ = replaceable(recs(5, 6, values=values), recs(4, values=values), recs(7, values=values)[0],
                           policies)
    assert epoch == 5  # 6 is the best so far


def test_a_best_that_a_newer_epoch_beat_is_replaceable():
    values = {5: 0.6, 6: 0.9}  # 5 was the best when it ended; 6 beats it
    policies = [LatestN(20), BestK(1, history=tuple(values.items()))]
    assert replaceable(recs(5, values=values), [], recs(6, values=values)[0], policies)[0] == 5


def test_nothing_kept_is_replaced_and_training_waits():
    epoch, why = replaceable(recs(4, 8), [], recs(9)[0], [LatestN(2), EveryK(4)])
    assert epoch is None and why == ("every waiting checkpoint is kept (epoch 4: every 4 epochs; "
                                     "epoch 8: every 4 epochs)")
    assert replaceable(recs(5, 6), [], recs(7)[0], [KeepAll()])[0] is None
    assert replaceable(recs(5), [], recs(6)[0], [LatestN(3), Protect(frozenset({5}))])[0] is None
    assert replaceable([], [], recs(6)[0], [LatestN(3)]) == (None, "nothing waits")


class Job:
    def __init__(self, epoch, log, gate=None):
        self.epoch, self.log, self.gate, self.carried = epoch, log, gate, ()

    def absorb(self, older):
        self.carried = (*older.carried, older.epoch, *self.carried)

    def __call__(self):
        if self.gate is not None:
            self.gate.wait(10)
        self.log.append((self.epoch, self.carried))


def test_the_queue_replaces_what_choose_names_and_never_blocks_then():
    log, gate = [], threading.Event()
    said = []
    q = CheckpointQueue(2, say=said.append)
    q.submit(Job(1, log, gate))  # runs, held at the gate
    while q.pending != 1 or not q._running:
        pass
    q.submit(Job(2, log))
    q.submit(Job(3, log))
    newest = lambda waiting: (len(waiting) - 1, "why")  # noqa: E731 - replace the newest waiting
    for e in (4, 5, 6):  # each replaces the newest waiting one; none blocks (the gate is shut)
        q.submit(Job(e, log), newest)
    assert q.replaced == 3 and q.pending == 3 and q.waited_s == 0.0
    gate.set()
    q.drain()
    q.close()
    assert log == [(1, ()), (2, ()), (6, (3, 4, 5))]  # 6 logs what 3, 4 and 5 would have
    assert said == ["Training goes on while the tracking store is busy: why (said once; the count is "
                    "given at the end)"]


def test_the_queue_waits_when_choose_keeps_everything():
    log, gate = [], threading.Event()
    q = CheckpointQueue(1, say=lambda m: None)
    q.submit(Job(1, log, gate))
    while not q._running:
        pass
    q.submit(Job(2, log))
    timer = threading.Timer(0.3, gate.set)
    timer.start()
    q.submit(Job(3, log), lambda waiting: (None, "all kept"))  # waits until 1 is done
    assert q.waited_s >= 0.2 and q.replaced == 0
    q.drain()
    q.close()
    assert [e for e, _ in log] == [1, 2, 3]


@pytest.mark.parametrize("bound", [1, 3])
def test_the_bound_holds_with_replacing(bound):
    log, gate = [], threading.Event()
    q = CheckpointQueue(bound, say=lambda m: None)
    q.submit(Job(0, log, gate))
    while not q._running:
        pass
    for e in range(1, 20):
        q.submit(Job(e, log), lambda waiting: (len(waiting) - 1, "newest"))
        assert q.pending <= bound + 1
    gate.set()
    q.drain()
    q.close()
    assert log[-1][0] == 19 and len(log) == bound + 1
