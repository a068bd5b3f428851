"""PURE checkpoint retention: given a run's checkpoint records, which to keep and why.

No I/O here. The caller builds records from the run's own bookkeeping (never from a directory
glob or modification times: both have deleted the wrong files elsewhere), asks ``decide`` or
``to_delete``, and does the deleting itself, after the newest checkpoint is confirmed stored.

What is never deleted, whatever ``keep`` says:
- the newest ``keep`` checkpoints, by epoch, among those confirmed stored;
- the best epoch (the caller says which, e.g. from the run's recorded best metric);
- any protected epoch (e.g. the checkpoint the run resumed from);
- any record not confirmed stored: deleting it loses data, and until a newer one is confirmed
  it must not count toward the newest ``keep`` either, or an older confirmed copy would be
  deleted while the only newer one is still uploading.
The final model has no epoch and is not a checkpoint record at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Reasons, in the order they are listed when several apply to one record.
DISABLED = "retention disabled"
NOT_STORED = "not confirmed stored"
PROTECTED = "resumed from"


@dataclass(frozen=True)
class CheckpointRecord:
    epoch: int  # the epoch this checkpoint was saved after; orders the records
    name: str  # file or artifact name, e.g. "mammals_epoch0041.pth"; what the deleter gets
    size: int | None = None  # bytes, for reporting; None where the store did not say
    stored: bool = True  # upload to the tracking store confirmed; unconfirmed ones are kept

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
    reason: str  # why, for logs and reports: "newest 20", "older than the newest 20", ...


def check_keep(keep: int | None) -> None:
    """Raise ValueError unless ``keep`` is None (keep everything) or an integer >= 1."""
    if keep is None:
        return
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1 (or None to keep every checkpoint), got {keep!r}")


def _sorted_unique(records: Iterable[CheckpointRecord]) -> list[CheckpointRecord]:
    ordered = sorted(records, key=lambda r: r.epoch)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.epoch == b.epoch:
            raise ValueError(
                f"two checkpoints for epoch {a.epoch} ({a.name!r} and {b.name!r}); "
                "retention needs one record per epoch"
            )
    return ordered


def decide(
    records: Iterable[CheckpointRecord],
    *,
    keep: int | None,
    best_epoch: int | None = None,
    protect: Iterable[int] = (),
    best_label: str = "best",
) -> list[Decision]:
    """One decision per record, ordered by epoch.

    keep: how many of the newest confirmed-stored checkpoints to keep; None keeps everything.
    best_epoch: kept even outside the newest ``keep``; ignored when no record has that epoch.
    protect: epochs kept regardless (the checkpoint the run resumed from, say).
    best_label: the reason given for the best, e.g. "best (map=0.973)".
    Several reasons that apply to one kept record are joined with "; ".
    """
    check_keep(keep)
    ordered = _sorted_unique(records)
    if keep is None:
        return [Decision(r, True, DISABLED) for r in ordered]

    stored = [r.epoch for r in ordered if r.stored]
    newest = set(stored[-keep:])
    protected = set(protect)
    decisions = []
    for r in ordered:
        reasons = []
        if r.epoch in newest:
            reasons.append(f"newest {keep}")
        if best_epoch is not None and r.epoch == best_epoch:
            reasons.append(best_label)
        if r.epoch in protected:
            reasons.append(PROTECTED)
        if not r.stored:
            reasons.append(NOT_STORED)
        if reasons:
            decisions.append(Decision(r, True, "; ".join(reasons)))
        else:
            decisions.append(Decision(r, False, f"older than the newest {keep}"))
    return decisions


def to_delete(
    records: Iterable[CheckpointRecord],
    *,
    keep: int | None,
    best_epoch: int | None = None,
    protect: Iterable[int] = (),
    best_label: str = "best",
) -> list[Decision]:
    """Only the deletions of ``decide`` (same arguments), ordered by epoch."""
    decided = decide(records, keep=keep, best_epoch=best_epoch, protect=protect, best_label=best_label)
    return [d for d in decided if not d.keep]
