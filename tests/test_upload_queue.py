"""The checkpoint queue on its own (tracker.training.uploader): the worker that yields the cores to
training, the bound on how far the store may fall behind, and the drain that takes over."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from hype import processes
from tracker.training.config import TrackerConfig
from tracker.training.uploader import CheckpointQueue


class Job:
    """A job that takes ``seconds`` and records which thread ran it, and whom it replaced."""

    def __init__(self, n: int, ran: list, seconds: float = 0.0):
        self.n, self.ran, self.seconds, self.absorbed = n, ran, seconds, []

    def absorb(self, older: Job) -> None:
        self.absorbed = [*older.absorbed, older.n, *self.absorbed]

    def __call__(self) -> None:
        time.sleep(self.seconds)
        self.ran.append((self.n, threading.current_thread().name, tuple(self.absorbed)))


def replace_oldest(waiting):
    return 0, "test"


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
def test_a_yielding_worker_runs_at_the_idle_scheduling_class_and_training_keeps_its_own():
    q = CheckpointQueue(2, say=print, yield_cores=True)
    q.submit(Job(1, []))
    q.drain()
    assert q.priority == "SCHED_IDLE"
    assert os.sched_getscheduler(q._thread.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling (training) thread is untouched
    q.close()
    plain = CheckpointQueue(2, say=print)
    plain.submit(Job(1, []))
    plain.drain()
    assert plain.priority == "normal priority"
    assert os.sched_getscheduler(plain._thread.native_id) == os.SCHED_OTHER
    plain.close()


def test_the_uploader_yields_only_when_the_ranks_take_every_core():
    cores = len(os.sched_getaffinity(0))
    assert TrackerConfig.uploader_yields(cores) and TrackerConfig.uploader_yields(cores + 1)
    assert cores == 1 or not TrackerConfig.uploader_yields(cores - 1)
    assert TrackerConfig().upload_bound() == 2  # the uploader is on for every run by default
    assert TrackerConfig(upload_queue=0).upload_bound() == 0
    with pytest.raises(ValueError, match="max_lag_s"):
        TrackerConfig(max_lag_s=0)


def test_under_torchrun_the_uploader_counts_only_this_hosts_ranks(monkeypatch):
    """Two nodes of 2 ranks each on 2-core machines: rank 0's host is full, so the uploader
    yields; two nodes of 1 rank each leave a core free here, so it does not (the run's world
    of 2 would have said full)."""
    monkeypatch.setattr(processes, "usable_cores", lambda: 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert TrackerConfig.uploader_yields(4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert not TrackerConfig.uploader_yields(2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # a launcher that does not say: every rank counts
    assert TrackerConfig.uploader_yields(2)


def test_drain_runs_what_the_worker_has_not_started_on_the_calling_thread_in_order():
    ran: list = []
    q = CheckpointQueue(3, say=print)
    for n in range(1, 4):
        q.submit(Job(n, ran, seconds=0.2))
        time.sleep(0.05)  # the worker has taken job 1 by now
    q.drain()
    assert [n for n, _, _ in ran] == [1, 2, 3]
    assert ran[0][1] == "hype-uploader" and {t for _, t, _ in ran[1:]} == {"MainThread"}
    q.submit(Job(4, ran))  # the worker takes jobs again after a drain
    deadline = time.monotonic() + 10
    while len(ran) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran[-1][:2] == (4, "hype-uploader")
    q.close()


def test_without_a_lag_bound_replacing_never_waits_and_with_one_the_store_catches_up():
    """Jobs of 0.2 s handed over every 10 ms, each replacing the oldest waiting one: with no bound
    on the lag the store sees about one epoch in twenty and training never waits; with max_lag_s
    0.15 submit waits now and then for the oldest unstored epoch, which is then never more than
    that bound (plus the job in progress) behind."""
    said: list[str] = []
    for lag in (None, 0.15):
        ran: list = []
        q = CheckpointQueue(1, say=said.append, max_lag_s=lag)
        handed, worst = {}, 0.0
        for n in range(1, 41):
            handed[n] = time.monotonic()
            q.submit(Job(n, ran, seconds=0.2), replace_oldest)
            stored = [m for done in ran for m in (done[0], *done[2])]
            unstored = [m for m in handed if m not in stored]
            # the oldest epoch the store lacks, as it was before this hand-over
            if len(unstored) > 1:
                worst = max(worst, time.monotonic() - handed[unstored[0]])
            time.sleep(0.01)
        q.drain()
        q.close()
        stored = sorted(m for done in ran for m in (done[0], *done[2]))
        assert stored == list(range(1, 41))  # every epoch's job ran or was carried by a later one
        if lag is None:
            assert q.lag_waits == 0 and q.waited_s == 0
        else:
            assert q.lag_waits >= 2 and worst <= lag + 0.2 + 0.1, worst
    assert said.count("Training waits for the tracking store to catch up: its oldest unstored epoch "
                      "is over 0.15 s old (said once)") == 1


def test_a_replaced_jobs_metrics_go_to_the_job_that_runs_next_in_its_place():
    """Waiting: epochs 2 and 3; epoch 4 replaces 2 (say 3 is a kept best). Epoch 3 runs next, so
    it takes over epoch 2's metrics: no checkpoint is stored before an earlier epoch's metrics."""
    ran: list = []
    gate = threading.Event()
    q = CheckpointQueue(2, say=print)

    class Blocked(Job):
        def __call__(self):
            gate.wait(10)
            super().__call__()

    q.submit(Blocked(1, ran))
    time.sleep(0.05)  # the worker holds job 1
    q.submit(Job(2, ran))
    q.submit(Job(3, ran))
    q.submit(Job(4, ran), lambda waiting: (0, "test"))
    gate.set()
    q.drain()
    q.close()
    assert [(n, carried) for n, _, carried in ran] == [(1, ()), (3, (2,)), (4, ())]
    assert q.replaced == 1


def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)


def replace_newest(waiting):
    return len(waiting) - 1, "test"


def test_a_paced_worker_waits_its_cost_over_the_duty_and_what_arrives_meanwhile_is_replaced(monkeypatch):
    """duty 0.1: a job that costs 0.05 s (sleeping counts: a server's answer is a cost too) lets
    the next start no sooner than 0.5 s after it began. The epochs handed over meanwhile wait at
    the bound and replace each other; none of them makes training wait; drain ignores the pace."""
    from tracker.training import uploader

    monkeypatch.setattr(uploader, "yield_to_others", lambda: "normal priority")  # no starving here
    ran: list = []
    q = CheckpointQueue(2, say=print, yield_cores=True, duty=0.1, max_lag_s=30)
    began = time.monotonic()
    q.submit(Job(1, ran, seconds=0.05))
    _until(lambda: len(ran) == 1)
    for n in range(2, 8):
        q.submit(Job(n, ran), replace_newest)
    assert q.waited_s == 0 and q.replaced == 4  # 2 waits; 3..6 were each replaced by the next
    _until(lambda: len(ran) == 2)
    assert ran[1][0] == 2 and time.monotonic() - began >= 0.5 - 0.01
    assert 0.45 <= q.paced_s <= 0.6
    q.drain()  # job 2 cost nothing, so job 7 (carrying 3..6) follows at once
    assert [(n, carried) for n, _, carried in ran] == [(1, ()), (2, ()), (7, (3, 4, 5, 6))]
    q.close()

    slow: list = []  # drain ignores the pace: a job left paced runs on the calling thread
    q = CheckpointQueue(2, say=print, yield_cores=True, duty=0.01, max_lag_s=30)
    q.submit(Job(1, slow, seconds=0.05))
    _until(lambda: len(slow) == 1)
    q.submit(Job(2, slow))
    t0 = time.monotonic()
    q.drain()
    assert time.monotonic() - t0 < 1.0 and slow[-1][:2] == (2, "MainThread")
    q.close()


def test_the_pace_gives_way_when_training_would_wait_and_is_off_without_yielding(monkeypatch):
    from tracker.training import uploader

    monkeypatch.setattr(uploader, "yield_to_others", lambda: "normal priority")
    ran: list = []
    q = CheckpointQueue(2, say=print, yield_cores=True, duty=0.01, max_lag_s=30)  # 10 s pace per 0.1 s job
    q.submit(Job(1, ran, seconds=0.1))
    _until(lambda: len(ran) == 1)
    q.submit(Job(2, ran))
    q.submit(Job(3, ran))
    t0 = time.monotonic()
    q.submit(Job(4, ran), lambda waiting: (None, "every waiting one is kept"))  # would wait
    assert time.monotonic() - t0 < 2.0  # not the pace's 10 s: the worker took job 2 at once
    _until(lambda: len(ran) == 2)
    assert [n for n, _, _ in ran] == [1, 2]
    assert q.max_interval_s == 10.0 and q.paced_s == 10.0  # capped at a third of max_lag_s
    q.drain()
    q.close()
    plain = CheckpointQueue(2, say=print, duty=0.01)  # a spare core: no pace
    assert plain.duty is None
    plain.close()
    with pytest.raises(ValueError, match="upload_duty"):
        TrackerConfig(upload_duty=0)
