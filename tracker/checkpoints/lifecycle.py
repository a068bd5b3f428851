"""One run's checkpoint lifecycle: inventory -> policy -> deleter -> bookkeeping.

``RunCheckpoints`` is what the trainer (after each save), resume (reconcile) and every
cleanup mode hold for a run: the run's verified local folder and manifest, and its tracked
folder. ``plan`` is inventory + the pure policies; ``apply`` hands the deletions to the one
deleter; ``retained_tags`` is the bookkeeping every caller writes after deleting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tracker import layout
from tracker.checkpoints.deleter import Deleter, Deletion
from tracker.checkpoints.inventory import Inventory, Item, build, scan_local
from tracker.checkpoints.manifest import Manifest
from tracker.checkpoints.models import CheckpointModels
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy.retention import CheckpointRecord, Decision, Policy, Protect, decide
from tracker.store.errors import StorePermissionError, StoreUnavailable

FINISHING = "finishing an interrupted deletion"


@dataclass(frozen=True)
class Plan:
    inventory: Inventory
    decisions: tuple[Decision, ...]  # one per record the policies saw, by epoch
    finishing: tuple[Item, ...] = ()  # deletions a kill interrupted: finished, whatever the policies

    @property
    def deletions(self) -> list[tuple[Item, str]]:
        """(item, reason) to delete, by epoch: interrupted ones and the policies' drops."""
        by_epoch = self.inventory.by_epoch()
        out = [(i, FINISHING) for i in self.finishing]
        out += [(by_epoch[d.record.epoch], d.reason) for d in self.decisions if not d.keep]
        return sorted(out, key=lambda x: x[0].epoch)

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]


@dataclass(frozen=True)
class Applied:
    plan: Plan
    deletions: tuple[Deletion, ...]  # one per planned deletion tried, in order
    error: StorePermissionError | StoreUnavailable | None = None  # what stopped the pass, if anything
    dry_run: bool = False

    @property
    def retained(self) -> list[CheckpointRecord]:
        """The run's checkpoints after this pass: the kept ones and those a deletion did not remove."""
        gone = {d.item.epoch for d in self.deletions if d.status != "failed"}
        if self.dry_run:
            gone = {i.epoch for i, _ in self.plan.deletions}
        return [r for r in self.plan.inventory.records() if r.epoch not in gone]

    @property
    def failed(self) -> list[Deletion]:
        return [d for d in self.deletions if d.status == "failed"]


def retained_tags(records: Iterable[CheckpointRecord]) -> dict[str, str]:
    """PURE bookkeeping: the run tags that say what it holds, after any deletion by anyone."""
    epochs = sorted(r.epoch for r in records)
    return {layout.TAG_RETAINED: str(len(epochs)),
            layout.TAG_RETAINED_EPOCHS: ",".join(map(str, epochs))}


class RunCheckpoints:
    """A run's checkpoints on both sides. ``folder`` must already be verified as the run's
    (its manifest names the run, or, with ``legacy_local``, it is the run's default folder)."""

    def __init__(self, run_id: str, model: str, *, store: TrackedCheckpoints | None,
                 folder: Path | None, manifest: Manifest | None, legacy_local: bool = False,
                 models: CheckpointModels | None = None):
        self.run_id, self.model = run_id, model
        self.store, self.folder, self.manifest, self.models = store, folder, manifest, models
        self.legacy_local = legacy_local
        self.deleter = Deleter(store=store, folder=folder, manifest=manifest, models=models)

    def close(self) -> None:
        if self.manifest is not None:
            self.manifest.close()

    def inventory(self, *, listing: Mapping[str, int] | None = None,
                  values: Mapping[int, float] | None = None) -> Inventory:
        """listing: the tracked folder as just listed (the trainer has one from its upload)."""
        tracked = listing
        if tracked is None and self.store is not None:
            tracked = self.store.list()
        local, skipped = None, []
        if self.folder is not None and self.folder.is_dir():
            local, skipped = scan_local(self.folder)
        entries = self.manifest.entries() if self.manifest is not None else None
        inv = build(self.model, manifest=entries, local=local, tracked=tracked,
                    legacy_local=self.legacy_local, values=values)
        look_alikes = [s for s in skipped if s.name not in {x.name for x in inv.not_ours}]
        return Inventory(inv.model, inv.items, tuple(sorted(inv.not_ours + tuple(look_alikes),
                                                            key=lambda s: s.name)),
                         inv.vanished, inv.bound)

    def plan(self, policies: Sequence[Policy], *, protect: Iterable[int] = (),
             inventory: Inventory | None = None, **kw) -> Plan:
        inv = inventory or self.inventory(**kw)
        protect = frozenset(protect)
        all_policies = [*policies, Protect(protect)] if protect else list(policies)
        return Plan(inv, tuple(decide(inv.records(), all_policies)), inv.interrupted)

    def apply(self, plan: Plan, *, dry_run: bool = False, confirm: bool = True,
              tick: Callable[[Deletion], None] = lambda d: None) -> Applied:
        """Delete what ``plan`` says, in epoch order; stop at a refusal or an outage. Not in a dry
        run: first record what the listing confirmed (an upload a kill left unrecorded is stored)."""
        if not dry_run and self.manifest is not None:
            for item in plan.inventory.items:
                if item.state == "written" and item.stored:
                    self.manifest.set_state(item.epoch, "stored")
        done: list[Deletion] = []
        for item, reason in plan.deletions:
            if dry_run:
                done.append(self.deleter.plan_only(item, reason))
            else:
                try:
                    done.append(self.deleter.delete(item, reason, confirm=confirm))
                except (StorePermissionError, StoreUnavailable) as e:
                    return Applied(plan, tuple(done), e)
            tick(done[-1])
        return Applied(plan, tuple(done), dry_run=dry_run)

