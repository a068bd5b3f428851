"""PURE: which checkpoint waiting to be stored a newer one may replace, when the store is slower
than training.

The uploader holds at most a few checkpoints (its bound). When a new one arrives and every slot
is taken, the newest waiting checkpoint that no policy but "newest N" keeps is replaced by the
new one: it would only have been stored to be deleted N epochs later, and storing it is what
makes training wait. Its epoch's metrics still go in (with the next job). Kept checkpoints are
never replaced: the best K (judged, as retention judges it, over what the run holds, what waits
and the new epoch, by the newest epoch's values), every k-th, the one a resume started from, and
all of them under "keep all". When every waiting one is kept, training waits at the bound.
This is Orbax's continuous checkpointing (save when no save is in flight) with the policies'
guarantees on top.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracker.policy.retention import CheckpointRecord, LatestN, Policy, decide


def replaceable(waiting: Sequence[CheckpointRecord], held: Sequence[CheckpointRecord],
                new: CheckpointRecord, policies: Sequence[Policy]) -> tuple[int | None, str]:
    """(the epoch of the waiting checkpoint that ``new`` replaces, or None; why).

    waiting: the checkpoints queued and not yet started, oldest first; held: what the run holds
    now; policies: the run's, as they are at ``new``'s epoch (retention.Retention.policies plus
    early stopping's best and the resumed-from epoch)."""
    if not waiting:
        return None, "nothing waits"
    beyond_newest = [p for p in policies if not isinstance(p, LatestN)]
    records = {r.epoch: r for r in (*held, *waiting, new)}  # one record per epoch, the latest
    kept = {d.record.epoch: d for d in decide(list(records.values()), beyond_newest) if d.keep}
    for r in reversed(waiting):
        if r.epoch not in kept:
            return r.epoch, (f"epoch {r.epoch}'s checkpoint is replaced by epoch {new.epoch}'s "
                             "while the store is busy (no policy but newest N kept it)")
    reasons = "; ".join(f"epoch {r.epoch}: {kept[r.epoch].reason}" for r in waiting)
    return None, f"every waiting checkpoint is kept ({reasons})"
