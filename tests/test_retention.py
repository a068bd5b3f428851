"""Retention decisions as tables: no disk anywhere."""

import pytest

from tracker.policy.retention import CheckpointRecord, Decision, decide, to_delete


def recs(*epochs, unstored=()):
    return [CheckpointRecord(e, f"m_epoch{e:04d}.pth", 100 * e, e not in unstored) for e in epochs]


def kept(decisions):
    return [d.record.epoch for d in decisions if d.keep]


@pytest.mark.parametrize(
    ("epochs", "kwargs", "expected_kept"),
    [
        # keep=1 keeps exactly the newest
        ((1, 2, 3, 4), {"keep": 1}, [4]),
        ((7,), {"keep": 1}, [7]),
        # keep larger than the count keeps everything
        ((1, 2, 3), {"keep": 5}, [1, 2, 3]),
        ((1, 2, 3), {"keep": 3}, [1, 2, 3]),
        ((), {"keep": 3}, []),
        # best inside the newest N: nothing extra
        ((1, 2, 3, 4, 5), {"keep": 2, "best_epoch": 5}, [4, 5]),
        # best outside the newest N: kept as well
        ((1, 2, 3, 4, 5), {"keep": 2, "best_epoch": 1}, [1, 4, 5]),
        ((1, 2, 3, 4, 5), {"keep": 1, "best_epoch": 3}, [3, 5]),
        # best epoch that has no checkpoint: ignored
        ((1, 2, 3, 4, 5), {"keep": 2, "best_epoch": 99}, [4, 5]),
        ((1, 2, 3, 4, 5), {"keep": 2, "best_epoch": None}, [4, 5]),
        # protected epochs (resumed from) kept; unknown ones ignored
        ((1, 2, 3, 4, 5), {"keep": 1, "protect": [2]}, [2, 5]),
        ((1, 2, 3, 4, 5), {"keep": 1, "protect": {2, 3, 42}}, [2, 3, 5]),
        ((1, 2, 3, 4, 5), {"keep": 1, "best_epoch": 2, "protect": [2]}, [2, 5]),
        # unsorted input: ordered by epoch, not by position
        ((5, 1, 4, 2, 3), {"keep": 2}, [4, 5]),
        ((10, 9, 100, 2), {"keep": 2}, [10, 100]),  # not by name text either
        # epoch 0 is an epoch
        ((0, 1), {"keep": 1}, [1]),
        # retention disabled
        ((1, 2, 3), {"keep": None}, [1, 2, 3]),
    ],
)
def test_kept_epochs(epochs, kwargs, expected_kept):
    decisions = decide(recs(*epochs), **kwargs)
    assert kept(decisions) == expected_kept
    assert [d.record.epoch for d in decisions] == sorted(epochs)  # result ordered by epoch
    deleted = [d.record.epoch for d in to_delete(recs(*epochs), **kwargs)]
    assert deleted == sorted(set(epochs) - set(expected_kept))


@pytest.mark.parametrize(
    ("epochs", "unstored", "keep", "expected_kept"),
    [
        # an old record not confirmed stored is kept
        ((1, 2, 3, 4), {1}, 1, [1, 4]),
        # the newest is still uploading: it does not count toward the newest N, so the
        # confirmed copy before it survives until the upload is confirmed
        ((1, 2, 3, 4), {4}, 1, [3, 4]),
        ((1, 2, 3, 4), {3, 4}, 2, [1, 2, 3, 4]),
        ((1, 2, 3, 4), {1, 2, 3, 4}, 1, [1, 2, 3, 4]),
        ((1, 2, 3, 4, 5), {3}, 2, [3, 4, 5]),
    ],
)
def test_unconfirmed_records(epochs, unstored, keep, expected_kept):
    assert kept(decide(recs(*epochs, unstored=unstored), keep=keep)) == expected_kept


@pytest.mark.parametrize(
    ("kwargs", "epoch", "reason"),
    [
        ({"keep": 2}, 5, "newest 2"),
        ({"keep": 2}, 1, "older than the newest 2"),
        ({"keep": 20}, 5, "newest 20"),
        ({"keep": 2, "best_epoch": 1, "best_label": "best (map=0.973)"}, 1, "best (map=0.973)"),
        ({"keep": 2, "best_epoch": 1}, 1, "best"),
        (
            {"keep": 2, "best_epoch": 5, "best_label": "best (map=0.9)"},
            5,
            "newest 2; best (map=0.9)",
        ),
        ({"keep": 2, "protect": [2]}, 2, "resumed from"),
        ({"keep": 2}, 3, "not confirmed stored"),
        ({"keep": None}, 1, "retention disabled"),
    ],
)
def test_reasons(kwargs, epoch, reason):
    decisions = {d.record.epoch: d for d in decide(recs(1, 2, 3, 4, 5, unstored={3}), **kwargs)}
    assert decisions[epoch].reason == reason


def test_decision_carries_the_record():
    r = CheckpointRecord(3, "m_epoch0003.pth", size=80_896)
    assert decide([r, CheckpointRecord(4, "m_epoch0004.pth")], keep=1)[0] == Decision(
        r, False, "older than the newest 1"
    )


@pytest.mark.parametrize("keep", [0, -1, 1.5, "3", True])
def test_bad_keep_is_named(keep):
    with pytest.raises(ValueError, match=f"got {keep!r}"):
        decide(recs(1, 2), keep=keep)
    with pytest.raises(ValueError, match="keep"):
        to_delete([], keep=keep)


def test_duplicate_epochs_rejected():
    records = [CheckpointRecord(3, "m_epoch3.pth"), CheckpointRecord(3, "m_epoch0003.pth")]
    with pytest.raises(ValueError, match="epoch 3"):
        decide(records, keep=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epoch": -1, "name": "x"},
        {"epoch": 1.0, "name": "x"},
        {"epoch": True, "name": "x"},
        {"epoch": 1, "name": "x", "size": -5},
        {"epoch": 1, "name": "x", "size": 1.5},
    ],
)
def test_bad_records_rejected(kwargs):
    with pytest.raises(ValueError):
        CheckpointRecord(**kwargs)


def test_accepts_any_iterable_once():
    # a generator is consumed once: decide must not iterate its input twice
    assert kept(decide((r for r in recs(1, 2, 3)), keep=2, best_epoch=1)) == [1, 2, 3]
