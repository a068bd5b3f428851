"""Early stopping as tables: histories in, (stop, reason) out."""

import math

import pytest

from tracker.policy.stopping import StopConfig, StopState, dedupe, fold, infer_mode, replay, should_stop

NAN = math.nan


def first_stop(history, cfg, metric="map"):
    """The step at which a run evaluating ``history`` in order would stop, or None."""
    state = StopState()
    for step, value in history:
        state = fold(state, step, value, cfg)
        if should_stop(state, cfg, metric)[0]:
            return step
    return None


def steps(values, start=1):
    return list(enumerate(values, start=start))


@pytest.mark.parametrize(
    ("values", "cfg", "stop_at"),
    [
        # plateau: best at 3, then 2 evaluations without improvement
        ([0.1, 0.2, 0.3, 0.3, 0.3], StopConfig(patience=2), 5),
        ([0.1, 0.2, 0.3, 0.3, 0.3], StopConfig(patience=3), None),
        ([0.1, 0.2, 0.3, 0.25, 0.2, 0.1], StopConfig(patience=3), 6),
        # patience=1 stops at the first evaluation that does not improve
        ([0.1, 0.2, 0.2], StopConfig(patience=1), 3),
        # still improving: never stops
        ([0.1, 0.2, 0.3, 0.4, 0.5], StopConfig(patience=1), None),
        # an improvement resets the counter
        ([0.1, 0.1, 0.2, 0.2, 0.3, 0.3], StopConfig(patience=2), None),
        # min_delta: gains of 0.001 do not count
        ([0.5, 0.501, 0.502, 0.503], StopConfig(patience=3, min_delta=0.01), 4),
        ([0.5, 0.6, 0.7, 0.8], StopConfig(patience=1, min_delta=0.05), None),
        # exactly min_delta is not more than min_delta
        ([0.5, 0.75, 1.0], StopConfig(patience=1, min_delta=0.25), 2),
        # min mode (a loss, a mean rank)
        ([10.0, 8.0, 9.0, 8.5], StopConfig(patience=2, mode="min"), 4),
        ([10.0, 8.0, 6.0, 4.0], StopConfig(patience=1, mode="min"), None),
        ([10.0, 9.99, 9.98], StopConfig(patience=2, mode="min", min_delta=0.1), 3),
        # NaN is no improvement
        ([0.1, NAN, NAN], StopConfig(patience=2), 3),
        ([0.1, NAN, 0.2, NAN], StopConfig(patience=2), None),
        ([NAN, NAN], StopConfig(patience=2), 2),
        ([NAN, 0.1, 0.1], StopConfig(patience=2), None),  # first number becomes the baseline
    ],
)
def test_stops_at_the_right_step(values, cfg, stop_at):
    assert first_stop(steps(values), cfg) == stop_at


BURNIN_10 = StopConfig(patience=2, burnin=10)


@pytest.mark.parametrize(
    ("history", "cfg", "stop_at"),
    [
        # burn-in: noisy low values before epoch 10 neither set the best nor use patience
        ([(0, 0.9), (5, 0.1), (10, 0.5), (15, 0.6), (20, 0.6)], BURNIN_10, None),
        ([(0, 0.9), (5, 0.1), (10, 0.5), (15, 0.4), (20, 0.4)], BURNIN_10, 20),
        # without burn-in the same 0.9 at epoch 0 would stop the run early
        ([(0, 0.9), (5, 0.1), (10, 0.5), (15, 0.6)], StopConfig(patience=3), 15),
        # a long burn-in with patience 1 does not stop during burn-in
        ([(e, 0.1) for e in range(20)], StopConfig(patience=1, burnin=20), None),
        # patience counts evaluations, not epochs: every 5 epochs here
        ([(20, 0.5), (25, 0.4), (30, 0.4)], StopConfig(patience=2, burnin=20), 30),
    ],
)
def test_burnin(history, cfg, stop_at):
    assert first_stop(history, cfg) == stop_at


def test_burnin_state_is_empty():
    state = replay([(0, 0.9), (1, 0.1)], StopConfig(burnin=2))
    assert state == StopState(best=None, best_epoch=None, bad_evals=0, last_step=1)
    assert should_stop(state, StopConfig(burnin=2), "map") == (
        False,
        "continuing: no evaluation of map after burn-in yet",
    )


HISTORIES = [
    (steps([0.1, 0.2, 0.3, 0.3, 0.3, 0.31, 0.2]), StopConfig(patience=2)),
    (steps([5.0, 4.0, 4.5, 3.0, 3.1, 3.2]), StopConfig(patience=3, mode="min", min_delta=0.05)),
    (steps([0.9, 0.1, 0.2, 0.5, 0.5, NAN, 0.6], start=0), StopConfig(patience=2, burnin=2)),
]


@pytest.mark.parametrize(("history", "cfg"), HISTORIES)
def test_fold_incrementally_equals_replay(history, cfg):
    for cut in range(len(history) + 1):
        state = StopState()
        for step, value in history[:cut]:
            state = fold(state, step, value, cfg)
        assert state == replay(history[:cut], cfg)


@pytest.mark.parametrize(("history", "cfg"), HISTORIES)
def test_resume_from_store_then_fold_equals_replay(history, cfg):
    # a run resumes after k evaluations: its state comes from the store, the rest are folded
    for k in range(len(history) + 1):
        state = replay(history[:k], cfg)
        for step, value in history:  # the resumed run logs old steps again: ignored
            state = fold(state, step, value, cfg)
        assert state == replay(history, cfg)


@pytest.mark.parametrize(("history", "cfg"), HISTORIES)
def test_duplicates_after_resume_give_the_same_decision(history, cfg):
    # MLflow keeps every row: a resume at step 3 logs steps 3.. again
    with_duplicates = history[:4] + history[2:] + history[3:]
    assert replay(with_duplicates, cfg) == replay(history, cfg)
    assert should_stop(replay(with_duplicates, cfg), cfg, "m") == should_stop(replay(history, cfg), cfg, "m")


def test_dedupe_keeps_the_last_value_per_step_sorted():
    assert dedupe([(3, 0.3), (1, 0.1), (2, 0.2), (3, 0.35), (2, 0.25)]) == [
        (1, 0.1),
        (2, 0.25),
        (3, 0.35),
    ]
    assert dedupe([]) == []


def test_replay_upto_drops_the_crashed_attempts_steps():
    # checkpoint at epoch 3; the crashed attempt logged 4 and 5 before dying
    history = steps([0.1, 0.2, 0.3, 0.2, 0.2])
    cfg = StopConfig(patience=2)
    state = replay(history, cfg, upto=3)
    assert state == StopState(best=0.3, best_epoch=3, bad_evals=0, last_step=3)
    # the resumed run logs 4 and 5 again, now better: they count
    state = fold(fold(state, 4, 0.4, cfg), 5, 0.5, cfg)
    assert state.best == 0.5
    assert replay(history + [(4, 0.4), (5, 0.5)], cfg) == state


def test_fold_ignores_steps_already_seen():
    cfg = StopConfig(patience=3)
    state = replay(steps([0.1, 0.2, 0.1]), cfg)
    assert fold(state, 3, 0.9, cfg) is state
    assert fold(state, 1, 0.9, cfg) is state


@pytest.mark.parametrize(
    ("history", "cfg", "metric", "expected"),
    [
        (
            [(40, 0.9), (41, 0.973)] + [(e, 0.97) for e in range(42, 48)],
            StopConfig(patience=6),
            "map",
            (True, "stopped: no improvement in map for 6 evaluations (best 0.973 at epoch 41)"),
        ),
        (
            [(1, 3.0), (2, 3.0)],
            StopConfig(patience=1, mode="min", min_delta=0.5),
            "mean_rank",
            (
                True,
                "stopped: no improvement of more than 0.5 in mean_rank for 1 evaluation (best 3 at epoch 1)",
            ),
        ),
        (
            [(1, 0.5), (2, 0.4)],
            StopConfig(patience=6),
            "map",
            (False, "continuing: best map 0.5 at epoch 1, 1/6 evaluations without improvement"),
        ),
        (
            [(1, NAN), (2, NAN)],
            StopConfig(patience=2),
            "map",
            (True, "stopped: map was not a number in 2 evaluations after burn-in"),
        ),
        (
            [(1, NAN)],
            StopConfig(patience=2),
            "map",
            (False, "continuing: no number for map yet, 1/2 evaluations without improvement"),
        ),
        ([], StopConfig(), "map", (False, "continuing: no evaluation of map after burn-in yet")),
    ],
)
def test_reasons(history, cfg, metric, expected):
    assert should_stop(replay(history, cfg), cfg, metric) == expected


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("map", "max"),
        ("MAP", "max"),
        ("map_rank", "max"),  # MAP, not a rank
        ("val_map", "max"),
        ("eval/map", "max"),
        ("accuracy", "max"),
        ("val_acc", "max"),
        ("mrr", "max"),
        ("loss", "min"),
        ("train_loss", "min"),
        ("map_loss", "min"),  # a loss is minimised whatever it is of
        ("mean_rank", "min"),
        ("rank", "min"),
        ("eval.mean_rank", "min"),
    ],
)
def test_infer_mode(metric, mode):
    assert infer_mode(metric) == mode


@pytest.mark.parametrize("metric", ["", "epoch_time", "heatmap", "lr", "mapping"])
def test_infer_mode_unknown_says_what_to_do(metric):
    with pytest.raises(ValueError, match="--mode") as e:
        infer_mode(metric)
    assert repr(metric) in str(e.value)
    assert "map" in str(e.value) and "loss" in str(e.value)  # lists the accepted words


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": 0}, "patience.*got 0"),
        ({"patience": -3}, "patience.*got -3"),
        ({"patience": 2.5}, "patience.*got 2.5"),
        ({"patience": True}, "patience"),
        ({"min_delta": -0.1}, "min_delta.*got -0.1"),
        ({"min_delta": NAN}, "min_delta.*nan"),
        ({"min_delta": "0.1"}, "min_delta"),
        ({"mode": "maximum"}, "mode.*'maximum'"),
        ({"mode": None}, "mode"),
        ({"burnin": -1}, "burnin.*got -1"),
        ({"burnin": 1.5}, "burnin"),
    ],
)
def test_config_validated_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StopConfig(**kwargs)


def test_config_defaults():
    cfg = StopConfig()
    assert (cfg.patience, cfg.min_delta, cfg.mode, cfg.burnin) == (6, 0.0, "max", 0)
    assert StopConfig(min_delta=0).min_delta == 0  # an int is a fine number
