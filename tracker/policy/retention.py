"""PURE checkpoint retention: composable policies that say which checkpoints to keep, and why.

No I/O here. The caller builds records from the run's own inventory (never from a directory
glob or modification times: both have deleted the wrong files elsewhere), asks ``decide``,
and hands the deletions to the one deleter, after the newest checkpoint is confirmed stored.

A checkpoint is kept when any policy keeps it (as Orbax's AnyPreservationPolicy), and each
decision names every policy that kept it:
- ``LatestN(n)``: the newest n by epoch, among those confirmed stored;
- ``BestK(k)``: the k best by the monitored value (only records that carry one);
- ``EveryK(k)``: epochs that are multiples of k (50, 100, ... for later analysis);
- ``KeepAll()``: everything;
- ``Protect(epochs, label)``: these epochs (the checkpoint a run resumed from, say).

One rule holds whatever the policies say: a record not confirmed stored is kept, and does
not count toward the newest n either, or an older confirmed copy would be deleted while the
only newer one is still uploading. The final model has no epoch and is never a record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tracker.policy.stopping import dedupe

Mode = Literal["max", "min"]

NOT_STORED = "not confirmed stored"
PROTECTED = "resumed from"
KEEP_ALL = "keep all"


@dataclass(frozen=True)
class CheckpointRecord:
    epoch: int  # the epoch this checkpoint was saved after; orders the records
    name: str  # file or artifact name, e.g. "mammals_epoch0041.pth"; what the deleter gets
    size: int | None = None  # bytes, for reporting; None where the store did not say
    stored: bool = True  # upload to the tracking store confirmed; unconfirmed ones are kept
    value: float | None = None  # the monitored metric at this epoch, if it was evaluated

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {self.epoch!r} ({self.name!r})")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
        ):
            raise ValueError(f"size must be bytes >= 0 or None, got {self.size!r} ({self.name!r})")


@dataclass(frozen=True)
class Decision:
    record: CheckpointRecord  # the checkpoint decided on
    keep: bool  # False: the caller should delete it
    reason: str  # why, for logs and reports: "newest 20; best (map=0.973)", "older than the newest 20"
    kept_by: tuple[str, ...] = ()  # the policies (and rules) that kept it, in policy order


class Policy(Protocol):
    def keeps(self, records: Sequence[CheckpointRecord]) -> dict[int, str]:
        """{epoch: reason} for the records this policy keeps; records are sorted by epoch."""


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class LatestN:
    n: int  # how many of the newest confirmed-stored checkpoints to keep

    def __post_init__(self) -> None:
        _positive("keep (newest N)", self.n)

    def keeps(self, records):
        stored = [r.epoch for r in records if r.stored]
        return {e: f"newest {self.n}" for e in stored[-self.n:]}


@dataclass(frozen=True)
class BestK:
    k: int  # how many of the best checkpoints by the monitored value to keep
    mode: Mode = "max"  # "max": higher is better (map); "min": lower is better (mean_rank, loss)
    monitor: str = "map"  # the metric's name, for the reason
    # Early stopping's min_delta: when > 0, only a value that beat the best so far by more than
    # this is a "best" (as early stopping and the final model count it), not merely a high one.
    min_delta: float = 0.0
    history: tuple[tuple[int, float], ...] = ()  # every (epoch, value) after burn-in; default: the records'

    def __post_init__(self) -> None:
        _positive("keep-best K", self.k)
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    def _improvements(self, scored: dict[int, float]) -> set[int]:
        best, out = None, set()
        for epoch, value in sorted(self.history or scored.items()):
            if math.isnan(value):
                continue
            if best is None or (value > best + self.min_delta if self.mode == "max"
                                else value < best - self.min_delta):
                best = value
                out.add(epoch)
        return out

    def keeps(self, records):
        scored = [r for r in records if r.value is not None and not math.isnan(r.value)]
        if self.min_delta > 0:
            allowed = self._improvements({r.epoch: r.value for r in scored})
            scored = [r for r in scored if r.epoch in allowed]
        sign = -1.0 if self.mode == "max" else 1.0
        # Ties go to the earlier epoch, as early stopping's "best" does (it needs a strict gain).
        ranked = sorted(scored, key=lambda r: (sign * r.value, r.epoch))[: self.k]
        label = "best" if self.k == 1 else f"best {self.k}"
        return {r.epoch: f"{label} ({self.monitor}={r.value:.6g})" for r in ranked}


@dataclass(frozen=True)
class EveryK:
    k: int  # keep the epochs that are multiples of k

    def __post_init__(self) -> None:
        _positive("keep-every K", self.k)

    def keeps(self, records):
        return {r.epoch: f"every {self.k} epochs" for r in records if r.epoch % self.k == 0 and r.epoch}


@dataclass(frozen=True)
class KeepAll:
    def keeps(self, records):
        return {r.epoch: KEEP_ALL for r in records}


@dataclass(frozen=True)
class Protect:
    epochs: frozenset[int] = field(default_factory=frozenset)  # kept whatever else says
    label: str = PROTECTED  # the reason given for them

    def keeps(self, records):
        return {r.epoch: self.label for r in records if r.epoch in self.epochs}


@dataclass(frozen=True)
class Retention:
    """The retention flags of ``train`` and ``cleanup``, validated; ``policies`` composes them."""

    keep: int | None = 20  # newest N kept (--keep / --keep-checkpoints); None keeps every one
    keep_best: int = 1  # best K by the monitored metric also kept (--keep-best); 0 turns it off
    keep_every: int = 0  # epochs that are multiples of K also kept (--keep-every); 0 turns it off

    def __post_init__(self) -> None:
        if self.keep is not None:
            _positive("keep (newest N)", self.keep)
        for name in ("keep_best", "keep_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 turns it off), got {value!r}")

    def policies(self, *, mode: Mode = "max", monitor: str = "map", min_delta: float = 0.0,
                 history=()) -> list[Policy]:
        """history: {epoch: value} or pairs of the monitored metric after burn-in (for min_delta)."""
        if self.keep is None:
            return [KeepAll()]
        out: list[Policy] = [LatestN(self.keep)]
        if self.keep_best:
            pairs = tuple(sorted(history.items() if isinstance(history, dict) else history))
            out.append(BestK(self.keep_best, mode, monitor, float(min_delta), pairs))
        if self.keep_every:
            out.append(EveryK(self.keep_every))
        return out

    def describe(self) -> str:
        """For the user: "newest 20 + best 1 + every 50 epochs"."""
        if self.keep is None:
            return "every checkpoint"
        parts = [f"newest {self.keep}"]
        parts += [f"best {self.keep_best}"] if self.keep_best else []
        parts += [f"every {self.keep_every} epochs"] if self.keep_every else []
        return " + ".join(parts)


def check_keep(keep: int | None) -> None:
    """Raise ValueError unless ``keep`` is None (keep everything) or an integer >= 1."""
    if keep is not None:
        _positive("keep", keep)


def _sorted_unique(records: Iterable[CheckpointRecord]) -> list[CheckpointRecord]:
    ordered = sorted(records, key=lambda r: r.epoch)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.epoch == b.epoch:
            raise ValueError(
                f"two checkpoints for epoch {a.epoch} ({a.name!r} and {b.name!r}); "
                "retention needs one record per epoch"
            )
    return ordered


def _drop_reason(policies: Sequence[Policy]) -> str:
    latest = [p for p in policies if isinstance(p, LatestN)]
    if latest:
        return f"older than the newest {latest[0].n}"
    return "kept by no policy"


def decide(records: Iterable[CheckpointRecord], policies: Sequence[Policy]) -> list[Decision]:
    """One decision per record, ordered by epoch: kept when any policy (or the not-stored rule)
    keeps it, with every reason joined by "; "."""
    ordered = _sorted_unique(records)
    kept = [p.keeps(ordered) for p in policies]
    decisions = []
    for r in ordered:
        reasons = list(dict.fromkeys(k[r.epoch] for k in kept if r.epoch in k))  # each once
        if not r.stored and NOT_STORED not in reasons:
            reasons.append(NOT_STORED)
        if reasons:
            decisions.append(Decision(r, True, "; ".join(reasons), tuple(reasons)))
        else:
            decisions.append(Decision(r, False, _drop_reason(policies)))
    return decisions


def roll_back(records: Iterable[CheckpointRecord], after: int, why: str) -> list[Decision]:
    """Deletions of every record after epoch ``after``, whatever the policies: a resume that goes
    on from ``after`` trains those epochs again, and their old checkpoints would otherwise be
    taken for the run's newest (by retention now, by the next resume later)."""
    return [Decision(r, False, f"rolled back: {why}") for r in _sorted_unique(records) if r.epoch > after]


def to_delete(records: Iterable[CheckpointRecord], policies: Sequence[Policy]) -> list[Decision]:
    """Only the deletions of ``decide``, ordered by epoch."""
    return [d for d in decide(records, policies) if not d.keep]


def monitored_values(history: Iterable[tuple[int, float]], *, start: int) -> dict[int, float]:
    """{epoch: value} of the monitored metric that best K ranks by: one value per step (the last
    logged, since a resumed run logs some steps again), only from epoch ``start`` on (burn-in
    evaluations count neither for early stopping nor for "best")."""
    return {e: v for e, v in dedupe(history) if e >= start}
