"""Kill -9 at every fault point and from outside, resume each time, lose nothing.

The short CI version of tests/stress/kill_stress.py (run that for 20+ random trials): one run
is killed five times in a row, each resume picking up where the last process died.
"""

from __future__ import annotations

import pytest

from tests.datasets import write_tree_closure
from tests.stress.kill_stress import EXTERNAL, Kill, Settings, bound_problems, cleanup_after_kill, run_trial
from tracker import faults


@pytest.mark.slow
def test_killed_while_checkpoints_are_replaced_the_resumed_run_loses_nothing(sqlite_tracking, tmp_path):
    """The default at the upload bound (waiting checkpoints only newest N keeps are replaced):
    killed at a handed-over checkpoint, in a save and from outside, each resume finds a
    consistent run; every epoch's metrics are in the store at the end."""
    s = Settings(epochs=12, keep=3, keep_best=True, supersede=True)
    plan = [Kill("queued", 3), Kill("save", 2), Kill(EXTERNAL, delay_s=0.1)]
    dataset = write_tree_closure(tmp_path / "tree.csv", branching=3, depth=3)
    trial = run_trial(0, plan, None, s, uri=sqlite_tracking.tracking_uri, work=tmp_path / "work",
                      dataset=dataset)
    assert trial.ok, "\n".join(trial.problems)
    assert trial.kills and str(trial.kills[0]) == "queued:3"
    assert trial.max_checkpoints <= s.keep + 2


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("save:3", ("save", 3, "KILL")),
                                             ("delete:1", ("delete", 1, "KILL")),
                                             ("delete:2:INT", ("delete", 2, "INT"))])
def test_fault_spec_parses(value, expected):
    assert faults.parse(value) == expected


@pytest.mark.parametrize("value", ["save", "save:0", "save:x", "rename:2", "save:-1", "save:1:TERM",
                                   "save:1:INT:x"])
def test_a_bad_fault_spec_names_the_points(value):
    with pytest.raises(ValueError, match="epoch, queued, save, upload, delete"):
        faults.parse(value)


def test_disk_bound_allows_one_old_best_only_with_keep_best():
    over = {((3, 7, 8, 9, 10), 0)}  # N=3: 7..10 are the newest N+1, 3 is beyond them
    assert bound_problems(over, 3, True, {3, 10}) == []
    assert bound_problems(over, 3, True, {10}) != []  # 3 was never the best
    assert bound_problems(over, 3, False, {3}) != []
    assert bound_problems({((3, 8, 9, 10), 1)}, 3, True, {3}) == []  # the probe is the newest
    assert bound_problems({((2, 3, 7, 8, 9, 10), 0)}, 3, True, {2, 3}) != []  # two beyond


@pytest.mark.slow
def test_killed_at_every_point_the_resumed_run_loses_nothing(sqlite_tracking, tmp_path):
    s = Settings(epochs=12, keep=3, keep_best=True)
    plan = [
        Kill("save", 4),  # fresh run: #1 is the disk guard's probe, #4 epoch 3's save (not renamed)
        Kill("upload", 2),  # resume: the 2nd checkpoint is in the store, not marked stored
        Kill("delete", 1),  # resume: its retention deleted the tracked copy, not the local one
        Kill("epoch", 2),  # resume: the 2nd epoch's metrics are logged, its checkpoint not written
        Kill("queued", 2),  # resume: the 2nd checkpoint handed to the uploader, perhaps not saved yet
        Kill(EXTERNAL, delay_s=0.2),  # resume: SIGKILL from outside, 0.2 s after its 1st checkpoint
    ]
    dataset = write_tree_closure(tmp_path / "tree.csv", branching=3, depth=3)
    trial = run_trial(0, plan, None, s, uri=sqlite_tracking.tracking_uri, work=tmp_path / "work",
                      dataset=dataset)
    assert trial.ok, "\n".join(trial.problems)
    assert [str(k) for k in trial.kills] == [str(k) for k in plan]
    assert len(trial.processes) == len(plan) + 1  # the last resume finished the run
    assert trial.max_checkpoints <= s.keep + 2  # N+1, and one old best at most

    # a cleanup killed between a tracked delete and its local one, then run again: every side agrees
    (first, again), problems = cleanup_after_kill(
        sqlite_tracking.tracking_uri, trial.run_id, tmp_path / "work" / "trial00" / trial.run_id,
        Kill("delete", 1), 1, work=tmp_path / "work", log="trial00")
    assert first.killed and again.rc == 0
    assert problems == []
