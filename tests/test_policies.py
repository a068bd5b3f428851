"""Composable retention policies (tracker.policy.retention) as tables: pure, no disk anywhere."""

from __future__ import annotations

import math

import pytest

from tracker.policy.retention import (
    KEEP_ALL,
    NOT_STORED,
    PROTECTED,
    BestK,
    CheckpointRecord,
    EveryK,
    KeepAll,
    LatestN,
    Protect,
    Retention,
    decide,
    monitored_values,
    to_delete,
)

NAN = math.nan


def rec(epoch, *, stored=True, value=None, name=None):
    return CheckpointRecord(epoch, name or f"m_epoch{epoch:04d}.pth", 100 + epoch, stored, value)


def recs(*epochs, unstored=(), values=None):
    values = values or {}
    return [rec(e, stored=e not in unstored, value=values.get(e)) for e in epochs]


def table(decisions):
    """{epoch: reason} for kept records, {epoch: "DROP: reason"} for the others."""
    return {d.record.epoch: (d.reason if d.keep else f"DROP: {d.reason}") for d in decisions}


# --- LatestN: the newest N among the records confirmed stored --------------------------------


@pytest.mark.parametrize(
    ("records", "n", "expected"),
    [
        # keep=1 keeps exactly the newest
        (recs(1, 2, 3, 4), 1, {1: "DROP: older than the newest 1", 2: "DROP: older than the newest 1",
                                3: "DROP: older than the newest 1", 4: "newest 1"}),
        (recs(7), 1, {7: "newest 1"}),
        (recs(), 3, {}),
        # more room than records: everything
        (recs(1, 2, 3), 5, {1: "newest 5", 2: "newest 5", 3: "newest 5"}),
        # input order does not matter; epochs, not names or positions, order them
        (recs(10, 9, 100, 2), 2, {2: "DROP: older than the newest 2", 9: "DROP: older than the newest 2",
                                   10: "newest 2", 100: "newest 2"}),
        # the newest is not confirmed stored: kept, and does not use up one of the N
        (recs(1, 2, 3, unstored=(3,)), 1, {1: "DROP: older than the newest 1", 2: "newest 1",
                                            3: NOT_STORED}),
        (recs(1, 2, 3, 4, 5, unstored=(4, 5)), 2, {1: "DROP: older than the newest 2", 2: "newest 2",
                                                   3: "newest 2", 4: NOT_STORED, 5: NOT_STORED}),
        # an unstored record in the middle does not count either
        (recs(1, 2, 3, 4, unstored=(3,)), 2, {1: "DROP: older than the newest 2", 2: "newest 2",
                                              3: NOT_STORED, 4: "newest 2"}),
        # nothing stored at all: nothing is deleted
        (recs(1, 2, 3, unstored=(1, 2, 3)), 1, {1: NOT_STORED, 2: NOT_STORED, 3: NOT_STORED}),
    ],
)
def test_latest_n_counts_only_stored_records(records, n, expected):
    assert table(decide(records, [LatestN(n)])) == expected


def test_unstored_records_are_never_deleted_whatever_the_policies():
    records = recs(1, 2, 3, 4, unstored=(1, 3))
    for policies in ([], [LatestN(1)], [EveryK(100)], [BestK(1)]):
        kept = {d.record.epoch for d in decide(records, policies) if d.keep}
        assert {1, 3} <= kept, policies
        assert {d.record.epoch for d in to_delete(records, policies)}.isdisjoint({1, 3})


def test_unstored_record_kept_by_no_policy_names_only_the_rule():
    (d,) = [d for d in decide(recs(1, 2, unstored=(1,)), [LatestN(1)]) if d.record.epoch == 1]
    assert d.keep is True
    assert d.reason == "not confirmed stored"
    assert d.kept_by == ("not confirmed stored",)


# --- BestK: the k best by the monitored value -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "k", "mode", "expected_best"),
    [
        ({1: 0.1, 2: 0.9, 3: 0.5}, 1, "max", [2]),
        ({1: 0.1, 2: 0.9, 3: 0.5}, 1, "min", [1]),
        ({1: 0.1, 2: 0.9, 3: 0.5, 4: 0.7}, 2, "max", [2, 4]),
        ({1: 0.1, 2: 0.9, 3: 0.5, 4: 0.7}, 2, "min", [1, 3]),
        # ties go to the earlier epoch, in both modes
        ({1: 0.2, 2: 0.9, 3: 0.9, 4: 0.1}, 1, "max", [2]),
        ({1: 0.2, 2: 0.1, 3: 0.1, 4: 0.9}, 1, "min", [2]),
        ({1: 0.5, 2: 0.5, 3: 0.5}, 2, "max", [1, 2]),
        # NaN and None are never best, in either mode
        ({1: NAN, 2: 0.3, 3: None}, 1, "max", [2]),
        ({1: NAN, 2: 0.3, 3: None}, 1, "min", [2]),
        ({1: NAN, 2: NAN}, 1, "max", []),
        ({1: None, 2: None}, 1, "min", []),
        # fewer scored records than k: all of them
        ({1: 0.4, 2: None}, 3, "max", [1]),
        # a negative value can be the best "min"
        ({1: -2.0, 2: 0.0, 3: -1.0}, 1, "min", [1]),
    ],
)
def test_best_k_table(values, k, mode, expected_best):
    records = [rec(e, value=v) for e, v in values.items()]
    keeps = BestK(k, mode, "map").keeps(sorted(records, key=lambda r: r.epoch))
    assert sorted(keeps) == expected_best
    decisions = decide(records, [BestK(k, mode, "map")])
    assert [d.record.epoch for d in decisions if d.keep] == expected_best
    assert all(d.reason == "kept by no policy" for d in decisions if not d.keep)


@pytest.mark.parametrize(
    ("k", "mode", "monitor", "value", "reason"),
    [
        (1, "max", "map", 0.973, "best (map=0.973)"),
        (2, "max", "map", 0.5, "best 2 (map=0.5)"),
        (1, "min", "mean_rank", 12.0, "best (mean_rank=12)"),
        (1, "min", "loss", 0.123456789, "best (loss=0.123457)"),
    ],
)
def test_best_k_reason(k, mode, monitor, value, reason):
    (d,) = decide([rec(3, value=value)], [BestK(k, mode, monitor)])
    assert d.keep and d.reason == reason and d.kept_by == (reason,)


# --- EveryK, KeepAll, Protect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "k", "expected"),
    [
        ((0, 1, 2, 3, 4, 5, 6), 2, [2, 4, 6]),  # epoch 0 is a multiple of everything: not kept
        ((0, 50, 99, 100, 150), 50, [50, 100, 150]),
        ((0,), 1, []),
        ((0, 1, 2, 3), 1, [1, 2, 3]),
        ((1, 2, 3), 10, []),
    ],
)
def test_every_k_keeps_multiples_but_not_epoch_0(epochs, k, expected):
    decisions = decide(recs(*epochs), [EveryK(k)])
    assert [d.record.epoch for d in decisions if d.keep] == expected
    assert {d.reason for d in decisions if d.keep} <= {f"every {k} epochs"}


def test_keep_all_keeps_every_record():
    decisions = decide(recs(0, 1, 5, 9, unstored=(5,)), [KeepAll()])
    assert table(decisions) == {0: KEEP_ALL, 1: KEEP_ALL, 5: f"{KEEP_ALL}; {NOT_STORED}", 9: KEEP_ALL}
    assert to_delete(recs(0, 1, 5, 9), [KeepAll()]) == []


@pytest.mark.parametrize(
    ("protect", "expected"),
    [
        (Protect(frozenset({2})), {1: "DROP: older than the newest 1", 2: PROTECTED, 3: "newest 1"}),
        (Protect(frozenset({2, 42})), {1: "DROP: older than the newest 1", 2: PROTECTED, 3: "newest 1"}),
        (Protect(frozenset({1}), "pinned"), {1: "pinned", 2: "DROP: older than the newest 1", 3: "newest 1"}),
        (Protect(frozenset({3})), {1: "DROP: older than the newest 1", 2: "DROP: older than the newest 1",
                                   3: f"newest 1; {PROTECTED}"}),
        (Protect(), {1: "DROP: older than the newest 1", 2: "DROP: older than the newest 1", 3: "newest 1"}),
    ],
)
def test_protect(protect, expected):
    assert table(decide(recs(1, 2, 3), [LatestN(1), protect])) == expected


# --- composition: every policy that kept a record is named --------------------------------------


@pytest.mark.parametrize(
    ("records", "policies", "expected"),
    [
        # newest, best and every-k at once, in policy order
        (recs(1, 2, 3, 4, values={1: 0.1, 2: 0.2, 3: 0.3, 4: 0.9}),
         [LatestN(1), BestK(1), EveryK(2)],
         {1: "DROP: older than the newest 1", 2: "every 2 epochs", 3: "DROP: older than the newest 1",
          4: "newest 1; best (map=0.9); every 2 epochs"}),
        # the best outside the newest N
        (recs(1, 2, 3, 4, 5, values={1: 0.99, 5: 0.5}),
         [LatestN(2), BestK(1)],
         {1: "best (map=0.99)", 2: "DROP: older than the newest 2", 3: "DROP: older than the newest 2",
          4: "newest 2", 5: "newest 2"}),
        # a best record not confirmed stored: the policy and the rule
        (recs(1, 2, 3, unstored=(3,), values={3: 0.8, 1: 0.1}),
         [LatestN(1), BestK(1)],
         {1: "DROP: older than the newest 1", 2: "newest 1", 3: f"best (map=0.8); {NOT_STORED}"}),
        # each reason once, even when two policies give the same one
        (recs(1, 2), [LatestN(1), LatestN(1)], {1: "DROP: older than the newest 1", 2: "newest 1"}),
        (recs(1, 2), [Protect(frozenset({1}), "pinned"), Protect(frozenset({1}), "pinned")],
         {1: "pinned", 2: "DROP: kept by no policy"}),
        # no LatestN: the drop reason says no policy kept it
        (recs(1, 2, 3), [EveryK(2)], {1: "DROP: kept by no policy", 2: "every 2 epochs",
                                      3: "DROP: kept by no policy"}),
        (recs(1, 2), [], {1: "DROP: kept by no policy", 2: "DROP: kept by no policy"}),
        # the drop reason names the first LatestN
        (recs(1, 2, 3), [LatestN(1), LatestN(2)],
         {1: "DROP: older than the newest 1", 2: "newest 2", 3: "newest 1; newest 2"}),
    ],
)
def test_composed_reasons(records, policies, expected):
    assert table(decide(records, policies)) == expected


def test_kept_by_names_every_policy_and_matches_reason():
    records = recs(1, 2, 3, 4, unstored=(4,), values={4: 0.9, 1: 0.1})
    policies = [LatestN(1), BestK(1), EveryK(2), Protect(frozenset({4}))]
    by_epoch = {d.record.epoch: d for d in decide(records, policies)}
    d4 = by_epoch[4]
    assert d4.kept_by == ("best (map=0.9)", "every 2 epochs", PROTECTED, NOT_STORED)
    assert d4.reason == "; ".join(d4.kept_by)
    assert by_epoch[3].kept_by == ("newest 1",)
    assert by_epoch[1].keep is False and by_epoch[1].kept_by == ()
    for d in by_epoch.values():
        assert len(set(d.kept_by)) == len(d.kept_by)  # each reason once


def test_decisions_and_deletions_are_ordered_by_epoch():
    records = recs(9, 3, 7, 1, 5)
    assert [d.record.epoch for d in decide(records, [LatestN(2)])] == [1, 3, 5, 7, 9]
    deletions = to_delete(records, [LatestN(2)])
    assert [d.record.epoch for d in deletions] == [1, 3, 5]
    assert all(not d.keep and d.reason == "older than the newest 2" for d in deletions)


def test_decide_returns_the_records_it_was_given():
    records = recs(1, 2)
    assert [d.record for d in decide(records, [LatestN(1)])] == records


@pytest.mark.parametrize(
    "records",
    [
        [rec(3, name="m_epoch3.pth"), rec(3, name="m_epoch0003.pth")],
        [rec(1), rec(3, name="a_epoch0003.pth"), rec(2), rec(3, name="b_epoch0003.pth", stored=False)],
    ],
)
def test_duplicate_epochs_raise(records):
    with pytest.raises(ValueError, match="two checkpoints for epoch 3"):
        decide(records, [LatestN(5)])
    with pytest.raises(ValueError, match="one record per epoch"):
        to_delete(records, [KeepAll()])


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep": 0}, "got 0"),
        ({"keep": -3}, "got -3"),
        ({"keep": True}, "got True"),
        ({"keep": 2.5}, "got 2.5"),
        ({"keep": "3"}, "got '3'"),
        ({"keep_best": -1}, "keep_best must be an integer >= 0.*got -1"),
        ({"keep_best": True}, "keep_best.*got True"),
        ({"keep_best": 1.0}, "keep_best.*got 1.0"),
        ({"keep_every": -5}, "keep_every must be an integer >= 0.*got -5"),
        ({"keep_every": False}, "keep_every.*got False"),
    ],
)
def test_retention_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Retention(**kwargs)


def test_retention_keep_error_names_the_flag():
    with pytest.raises(ValueError, match=r"keep \(newest N\) must be an integer >= 1, got 0"):
        Retention(keep=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LatestN(0), r"keep \(newest N\).*got 0"),
        (lambda: LatestN(True), "got True"),
        (lambda: BestK(0), "keep-best K.*got 0"),
        (lambda: BestK(1, "avg"), "mode must be 'max' or 'min', got 'avg'"),
        (lambda: EveryK(0), "keep-every K.*got 0"),
        (lambda: EveryK(-1), "got -1"),
        (lambda: CheckpointRecord(-1, "m_epoch-1.pth"), "epoch must be an integer >= 0, got -1"),
        (lambda: CheckpointRecord(True, "m.pth"), "epoch must be an integer >= 0, got True"),
        (lambda: CheckpointRecord(1, "m_epoch0001.pth", -5), "size must be bytes >= 0 or None, got -5"),
    ],
)
def test_policy_and_record_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("kwargs", "described"),
    [
        ({}, "newest 20 + best 1"),
        ({"keep": 5, "keep_best": 0}, "newest 5"),
        ({"keep": 1, "keep_best": 0, "keep_every": 10}, "newest 1 + every 10 epochs"),
        ({"keep": 3, "keep_best": 2, "keep_every": 50}, "newest 3 + best 2 + every 50 epochs"),
        ({"keep": None}, "every checkpoint"),
        ({"keep": None, "keep_best": 3, "keep_every": 7}, "every checkpoint"),
    ],
)
def test_describe(kwargs, described):
    assert Retention(**kwargs).describe() == described


@pytest.mark.parametrize(
    ("kwargs", "policy_kwargs", "expected"),
    [
        ({}, {}, [LatestN(20), BestK(1, "max", "map")]),
        ({"keep": 4, "keep_best": 0}, {}, [LatestN(4)]),
        ({"keep": 3, "keep_best": 2, "keep_every": 10}, {"mode": "min", "monitor": "loss"},
         [LatestN(3), BestK(2, "min", "loss"), EveryK(10)]),
        ({"keep": None, "keep_best": 2, "keep_every": 10}, {}, [KeepAll()]),
    ],
)
def test_retention_policies(kwargs, policy_kwargs, expected):
    assert Retention(**kwargs).policies(**policy_kwargs) == expected


def test_retention_policies_decide_end_to_end():
    records = recs(*range(1, 11), values={e: e / 10 for e in range(1, 11)} | {2: 5.0})
    policies = Retention(keep=2, keep_best=1, keep_every=5).policies(mode="max", monitor="map")
    kept = {d.record.epoch: d.reason for d in decide(records, policies) if d.keep}
    assert kept == {2: "best (map=5)", 5: "every 5 epochs", 9: "newest 2", 10: "newest 2; every 5 epochs"}


# --- monitored_values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "start", "expected"),
    [
        ([], 0, {}),
        ([(0, 0.1), (1, 0.2), (2, 0.3)], 0, {0: 0.1, 1: 0.2, 2: 0.3}),
        # a resumed run logs a step again: the last logged wins
        ([(1, 0.2), (2, 0.3), (2, 0.35), (1, 0.25)], 0, {1: 0.25, 2: 0.35}),
        ([(3, 0.9), (3, 0.1)], 0, {3: 0.1}),
        # burn-in steps before start are dropped
        ([(0, 0.9), (1, 0.8), (2, 0.1), (3, 0.2)], 2, {2: 0.1, 3: 0.2}),
        ([(0, 0.9), (1, 0.8)], 5, {}),
        ([(4, 0.4), (5, 0.5)], 5, {5: 0.5}),
    ],
)
def test_monitored_values(history, start, expected):
    assert monitored_values(history, start=start) == expected


def test_monitored_values_feed_best_k():
    values = monitored_values([(1, 0.9), (2, 0.1), (3, 0.2), (1, 0.05)], start=1)
    records = [rec(e, value=values.get(e)) for e in (1, 2, 3)]
    (best,) = [d.record.epoch for d in decide(records, [BestK(1)]) if d.keep]
    assert best == 3  # epoch 1's 0.9 was superseded by its re-logged 0.05


@pytest.mark.parametrize("min_delta, history, expected", [
    (0.0, (), [3]),  # by value: 0.92 is the highest
    (0.1, (), [2]),  # as early stopping counts: 0.92 does not beat 0.9 by more than 0.1
    # the history holds an evaluation whose checkpoint is gone (epoch 0 at 0.95): nothing later beats it
    (0.1, ((0, 0.95), (1, 0.5), (2, 0.9), (3, 0.92), (4, 0.7)), []),
])
def test_best_k_counts_only_improvements_with_min_delta(min_delta, history, expected):
    records = [rec(e, value=v) for e, v in ((1, 0.5), (2, 0.9), (3, 0.92), (4, 0.7))]
    keeps = BestK(1, "max", "map", min_delta, history).keeps(records)
    assert sorted(keeps) == expected
