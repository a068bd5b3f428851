"""What a resume recovers from a run's folder and store: uploads a crash left unconfirmed,
tracked copies that differ from what the run recorded, and a checkpoint that still loads.

Every check compares against the run's manifest (size and sha256 recorded before the file got
its name), so a copy is repaired only from one that is provably the run's own, and a damaged
file is never deleted: a damaged local copy in the way of training is set aside, renamed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hype.train import TrainState
from tracker.checkpoints.files import CheckpointError, load, not_the_recorded, sha256_of
from tracker.checkpoints.inventory import Inventory, Item, build, scan_local
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.checkpoints.manifest import Entry
from tracker.training.callbacks import say

DAMAGED_SUFFIX = ".damaged"  # a damaged local copy set aside: not a checkpoint name, never deleted


def checked(ckpt: dict, run_id: str, path: Path) -> dict:
    """``ckpt`` if it does not say it belongs to another run."""
    owner = ckpt.get("run_id")
    if owner is not None and owner != run_id:
        raise CheckpointError(f"{path}: not ours (the file says it belongs to run {owner})")
    return ckpt


def adopt_legacy(ck: RunCheckpoints, tracked: dict) -> None:
    """Bind a folder from before manifests: by the old name rules (the folder is named after the
    run), record the files the store proves are the run's (same name and size) as stored, and
    local-only ones that load, and say they are this run's, as written."""
    local, _ = scan_local(ck.folder)
    legacy = build(ck.model, manifest=None, local=local, tracked=tracked, legacy_local=True)
    for item in legacy.items:
        if not item.local:
            continue
        path = ck.folder / item.name
        try:
            checked(load(path), ck.run_id, path)
        except CheckpointError as e:
            say(f"WARNING: {item.name} is not adopted as this run's: {e}")
            continue
        state = "stored" if item.stored else "written"
        ck.manifest.record(Entry(item.epoch, item.name, path.stat().st_size, sha256_of(path), state,
                                 item.value))
    ck.legacy_local = False


def _load_local(ck: RunCheckpoints, item: Item) -> tuple[dict | None, str | None]:
    """(the checkpoint, None) when the local copy is the manifest's and loads, else (None, why)."""
    path = ck.folder / item.name
    try:
        if item.sha256 is not None and sha256_of(path) != item.sha256:
            return None, "its sha256 differs from the manifest's"
        return checked(load(path), ck.run_id, path), None
    except CheckpointError as e:
        return None, str(e).removeprefix(f"{path}: ")


def reconcile(ck: RunCheckpoints, values: dict, policies: list, *, listing: dict | None = None
              ) -> Inventory:
    """Make the store hold what the run recorded, from the local copies that are provably the
    run's: upload what a crash left unconfirmed, repair a tracked copy whose size differs from
    the manifest's, and give a checkpoint the policies keep its tracked copy back if someone
    deleted it from the store. Returns the inventory after."""
    tracked = listing if listing is not None else ck.store.list()
    inv = ck.inventory(values=values, listing=tracked)
    kept = {d.record.epoch for d in ck.plan(policies, inventory=inv).kept}
    for item in inv.items:
        restore = item.lost_tracked and item.epoch in kept
        if not (restore or not item.stored) or not item.local or item.interrupted:
            continue
        _, why = _load_local(ck, item)
        if why is not None:
            say(f"WARNING: {item.name} is not in the store and is not usable; leaving it: {why}")
            continue
        ck.store.upload(ck.folder / item.name)
        ck.manifest.set_state(item.epoch, "stored")
        if restore:
            say(f"Stored {item.name} again: deleted from the store since, and still kept by the policies")
        elif item.tracked:
            say(f"Repaired the tracked copy of {item.name}: the store held {tracked[item.name]} bytes, "
                f"the run recorded {item.size}; uploaded the local copy again")
        else:
            say(f"Stored {item.name}, whose upload the interrupted run had not confirmed")
    return ck.inventory(values=values)


def verify_tracked(ck: RunCheckpoints, item: Item) -> bool:
    """Compare the tracked copy's sha256 with the manifest's; repair it from an intact local copy.
    True when the tracked copy is (now) the run's. Sizes are compared by every inventory; the
    hash needs a download, so resume checks it for the checkpoints it relies on."""
    if not (item.tracked and item.stored and item.sha256 and ck.store is not None):
        return item.stored
    # outside the run folder: a verify copy is no checkpoint of the run, and never counts as one
    with tempfile.TemporaryDirectory(prefix="hype-verify-") as tmp:
        got = ck.store.download(item.name, tmp)
        if sha256_of(got) == item.sha256:
            return True
    if item.local and _load_local(ck, item)[1] is None:
        ck.store.upload(ck.folder / item.name)
        say(f"Repaired the tracked copy of {item.name}: its sha256 differed from the one the run "
            "recorded; uploaded the intact local copy again")
        return True
    say(f"WARNING: the tracked copy of {item.name} is not the one the run recorded (sha256 differs), "
        "and there is no intact local copy to repair it from")
    return False


def fetch(ck: RunCheckpoints, item: Item, *, restore: bool = True) -> dict:
    """Load one retained checkpoint: the local copy when it is the manifest's, else the store's.
    A local file that is not ours is never overwritten; the store's copy is read beside it.
    restore=False: never write into the folder (another run's, read for a warm start)."""
    path = ck.folder / item.name if ck.folder is not None else Path(item.name)
    if item.local and ck.folder is not None:
        ckpt, why = _load_local(ck, item)
        if why is None:
            return ckpt
        say(f"WARNING: {path}: {why}; trying the tracking store's copy")
    elif ck.folder is not None and (path.exists() or path.is_symlink()):
        say(f"WARNING: {path}: not ours (not the file the run's manifest recorded); kept, "
            "reading the tracking store's copy")
    if not item.tracked or ck.store is None:
        raise CheckpointError(f"{path}: no usable copy (the store does not hold it)")
    with tempfile.TemporaryDirectory(dir=ck.folder if restore else None, prefix=".fetch-") as tmp:
        got = ck.store.download(item.name, tmp)
        try:
            ckpt = checked(load(got), ck.run_id, path)
        except CheckpointError as e:
            why = str(e).split(": ", 1)[-1]
            raise CheckpointError(f"{path}: the local copy is not usable and the tracking store's "
                                  f"copy does not load either ({why})") from None
        if restore and not path.exists() and not path.is_symlink():  # only a missing copy is restored
            got.replace(path)
            say(f"Downloaded {item.name} from the tracking store (no local copy)")
    return ckpt


@dataclass
class ResumePoint:
    state: TrainState | None  # None: no retained checkpoint loads
    item: Item | None  # the checkpoint it came from
    lost: list[str] = field(default_factory=list)  # newer checkpoints that did not load, and why


def load_newest(ck: RunCheckpoints, inv: Inventory, *, upto: int | None = None) -> ResumePoint:
    """The newest retained checkpoint (at or before ``upto``) that loads from either copy."""
    candidates = [i for i in inv.items if not i.interrupted and (upto is None or i.epoch <= upto)]
    lost = []
    for item in reversed(candidates):  # newest first; skip any that does not load
        try:
            return ResumePoint(TrainState.from_checkpoint(fetch(ck, item)), item, lost)
        except CheckpointError as e:
            say(f"WARNING: skipping {item.name}: {e}")
            lost.append(str(e))
    return ResumePoint(None, None, lost)


def set_aside(ck: RunCheckpoints, item: Item) -> Path | None:
    """Rename a local file at ``item``'s name that is not the recorded checkpoint (damaged) out of
    the way of the epoch that will be saved there again; nothing is deleted. Returns the new path."""
    path = ck.folder / item.name
    try:
        if not_the_recorded(path, item.size, item.sha256) is None:
            return None
    except FileNotFoundError:
        return None
    target, n = path.with_name(path.name + DAMAGED_SUFFIX), 1
    while target.exists() or target.is_symlink():
        target, n = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}"), n + 1
    path.rename(target)
    return target
