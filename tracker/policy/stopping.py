"""PURE early stopping from a metric history: whether to stop, and why.

The state is small and is rebuilt from the tracking store's metric history on resume
(``replay``), so a resumed run keeps its best value and its patience counter instead of
starting over. While the run goes on, ``fold`` adds one evaluation at a time; folding the
evaluations one by one gives the same state as replaying them all.

Patience counts evaluations, not epochs, and only evaluations after burn-in: during burn-in
the learning rate is divided and the metric is low and noisy, so those evaluations neither set
the best value nor use up patience.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

Mode = Literal["max", "min"]

# Metric-name words that say which way is better. A "loss" is always minimised, even
# "map_loss"; MAP-like words beat "rank" because "map_rank" is MAP (higher is better).
_MIN_FIRST = ("loss", "error")
_MAX_WORDS = ("map", "mrr", "accuracy", "acc", "precision", "recall", "f1", "auc", "ndcg", "hits")
_MIN_LAST = ("rank",)


@dataclass(frozen=True)
class StopConfig:
    patience: int = 6  # evaluations after burn-in without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    mode: Mode = "max"  # "max": higher is better (map); "min": lower is better (loss, mean_rank)
    burnin: int = 0  # evaluations at epochs < burnin are ignored (the burn-in epochs)

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int):
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}")
        if isinstance(self.min_delta, bool) or not isinstance(self.min_delta, int | float):
            raise ValueError(f"min_delta must be a number >= 0, got {self.min_delta!r}")
        if not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {self.min_delta!r}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if isinstance(self.burnin, bool) or not isinstance(self.burnin, int) or self.burnin < 0:
            raise ValueError(f"burnin must be an integer >= 0, got {self.burnin!r}")


@dataclass(frozen=True)
class StopState:
    best: float | None = None  # best value counted so far; None until a number is counted
    best_epoch: int | None = None  # the step (epoch) of that best value
    bad_evals: int = 0  # counted evaluations since the last improvement
    last_step: int | None = None  # newest step already folded in; older or equal ones are skipped


def infer_mode(metric: str) -> Mode:
    """Which way is better for a metric, from its name: "map" -> "max", "mean_rank" -> "min".

    Raises ValueError for a name it cannot read, rather than guessing a direction.
    """
    words = set(re.split(r"[^a-z0-9]+", metric.lower())) - {""}
    if words & set(_MIN_FIRST):
        return "min"
    if words & set(_MAX_WORDS):
        return "max"
    if words & set(_MIN_LAST):
        return "min"
    raise ValueError(
        f"cannot tell whether metric {metric!r} should go up or down; names with one of the "
        f"words {', '.join(_MIN_FIRST + _MIN_LAST)} are minimised, "
        f"{', '.join(_MAX_WORDS)} maximised; pass --mode max or --mode min"
    )


def dedupe(history: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    """One (step, value) per step, the last one given for each, sorted by step.

    MLflow keeps every row logged, so a run that resumed and logged a step again has two rows
    for it. Pass the history in logging order (MLflow: by timestamp) so that "last" is the
    value of the run as it continued.
    """
    last: dict[int, float] = {}
    for step, value in history:
        last[int(step)] = float(value)
    return sorted(last.items())


def _improves(value: float, best: float | None, cfg: StopConfig) -> bool:
    if math.isnan(value):
        return False  # NaN is never better than anything; it uses up patience
    if best is None:
        return True  # the first counted number is the baseline
    if cfg.mode == "max":
        return value > best + cfg.min_delta
    return value < best - cfg.min_delta


def fold(state: StopState, step: int, value: float, cfg: StopConfig) -> StopState:
    """The state after one more evaluation at ``step``.

    Steps at or before ``state.last_step`` were already counted (a resumed run logging them
    again) and change nothing. Steps in burn-in (< cfg.burnin) are seen but not counted.
    """
    if state.last_step is not None and step <= state.last_step:
        return state
    if step < cfg.burnin:
        return replace(state, last_step=step)
    value = float(value)
    if _improves(value, state.best, cfg):
        return StopState(best=value, best_epoch=step, bad_evals=0, last_step=step)
    return replace(state, bad_evals=state.bad_evals + 1, last_step=step)


def replay(history: Iterable[tuple[int, float]], cfg: StopConfig, *, upto: int | None = None) -> StopState:
    """The state after a whole history: dedupe, then fold every step in order.

    upto: ignore steps after this one. A run resuming from the checkpoint of epoch k passes
    upto=k: evaluations logged after k belong to the attempt that crashed, and the resumed run
    will log those steps again.
    """
    state = StopState()
    for step, value in dedupe(history):
        if upto is not None and step > upto:
            break
        state = fold(state, step, value, cfg)
    return state


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _evals(n: int) -> str:
    return f"{n} evaluation{'' if n == 1 else 's'}"


def should_stop(state: StopState, cfg: StopConfig, metric: str) -> tuple[bool, str]:
    """(stop?, reason). The reason is printed and logged as a run tag either way."""
    change = f"improvement of more than {_fmt(cfg.min_delta)}" if cfg.min_delta else "improvement"
    if state.bad_evals >= cfg.patience:
        if state.best is None:
            return True, (f"stopped: {metric} was not a number in {_evals(state.bad_evals)} after burn-in")
        return True, (
            f"stopped: no {change} in {metric} for {_evals(state.bad_evals)} "
            f"(best {_fmt(state.best)} at epoch {state.best_epoch})"
        )
    if state.best is None and state.bad_evals == 0:
        return False, f"continuing: no evaluation of {metric} after burn-in yet"
    best = (
        f"best {metric} {_fmt(state.best)} at epoch {state.best_epoch}"
        if state.best is not None
        else f"no number for {metric} yet"
    )
    return False, (f"continuing: {best}, {state.bad_evals}/{cfg.patience} evaluations without {change}")
