"""The one inventory: a run's checkpoints from its three sources, as records the policies decide.

Sources: the local folder (``scan_local``, I/O: list and stat only), the run's manifest, and
the tracked listing (``TrackedCheckpoints.list``). ``build`` merges them, PURE, one item per
epoch; the trainer after each save, resume's reconcile and every cleanup mode all call it.

What counts as the run's own:
- with a manifest: the manifest's rows. A local file is this checkpoint only when it has the
  row's name and size (the deleter checks the hash too); any other local file is "not ours"
  and is never deleted or uploaded. A tracked file is the run's (it is in the run's artifact
  folder), and one the manifest lacks is added from the store's side.
- without a manifest (runs made before manifests; the seed's flat folders): the names, as
  before. A run's local copy counts only if its folder is the run's default (named after the
  run id) and the tracked copy has the same size; otherwise it is "not ours".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracker.checkpoints.manifest import MANIFEST_NAME, Entry
from tracker.policy.names import is_final_model_name, looks_like_checkpoint, parse_checkpoint_name
from tracker.policy.retention import CheckpointRecord


@dataclass(frozen=True)
class Skipped:
    name: str  # an entry that looks like ours but is left alone
    reason: str  # why it is never deleted, e.g. "symlink: links are never deleted"


@dataclass(frozen=True)
class Item:
    epoch: int
    name: str
    size: int | None  # bytes (the manifest's, else the store's, else the file's)
    sha256: str | None  # from the manifest; None without one
    value: float | None  # monitored metric at this epoch (manifest, or the store's history)
    stored: bool  # the store holds it with the right size (what the policies need)
    tracked: bool  # the tracked listing shows it: the deleter deletes the tracked copy
    local: bool  # a local file that is this checkpoint
    state: str  # the manifest's state, "legacy" without a manifest
    interrupted: bool = False  # the manifest says deleted, copies remain: finish the deletion
    lost_tracked: bool = False  # confirmed stored once, its tracked copy deleted since (elsewhere)

    def record(self) -> CheckpointRecord:
        return CheckpointRecord(self.epoch, self.name, self.size, self.stored, self.value)


@dataclass(frozen=True)
class Inventory:
    model: str
    items: tuple[Item, ...]  # one per epoch, sorted
    not_ours: tuple[Skipped, ...] = ()  # local (or tracked) entries never touched, and why
    vanished: tuple[int, ...] = ()  # manifest rows whose files are gone from both sides
    bound: bool = False  # built from a manifest

    def records(self) -> list[CheckpointRecord]:
        """What the policies decide: every item but interrupted deletions (those just finish)."""
        return [i.record() for i in self.items if not i.interrupted]

    def by_epoch(self) -> dict[int, Item]:
        return {i.epoch: i for i in self.items}

    @property
    def interrupted(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.interrupted)


def kind_problem(entry: os.DirEntry) -> str | None:
    """Why an entry with a checkpoint-like name is not a file we may touch, or None."""
    if entry.is_symlink():
        return "symlink: links are never deleted or followed"
    if entry.is_dir(follow_symlinks=False):
        return "directory named like a checkpoint: never deleted"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file: never deleted"
    return None


def scan_local(folder: Path) -> tuple[dict[str, int], list[Skipped]]:
    """({name: size} of the regular files with checkpoint names, look-alikes) in ``folder``;
    not recursive, never follows links. OSError if the folder cannot be read."""
    files: dict[str, int] = {}
    skipped: list[Skipped] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    models = {p.model for e in entries if (p := parse_checkpoint_name(e.name))}
    for entry in entries:
        name = entry.name
        if parse_checkpoint_name(name) is None:
            if is_final_model_name(name) and name[:-4] in models:
                skipped.append(Skipped(name, "final model: never deleted"))
            elif looks_like_checkpoint(name) and name != MANIFEST_NAME:
                skipped.append(Skipped(name, "not a checkpoint name (<model>_epoch<N>.pth or "
                                             "<model>.pth.<N>): never deleted"))
            continue
        problem = kind_problem(entry)
        if problem is None:
            try:
                files[name] = entry.stat(follow_symlinks=False).st_size
                continue
            except OSError as e:  # vanished or unreadable between listing and stat
                problem = f"cannot stat: {e.strerror or e}"
        skipped.append(Skipped(name, problem))
    return files, skipped


def models_in(names) -> list[str]:
    """The model names that ``names`` hold checkpoints of, sorted."""
    return sorted({p.model for n in names if (p := parse_checkpoint_name(n))})


def _by_epoch(names: Mapping[str, int], model: str) -> tuple[dict[int, str], list[Skipped]]:
    """{epoch: name} of ``model``'s checkpoint names; an epoch with two names is skipped whole:
    which copy is the real one is for a person to say."""
    seen: dict[int, list[str]] = {}
    for name in sorted(names):
        p = parse_checkpoint_name(name)
        if p is not None and p.model == model:
            seen.setdefault(p.epoch, []).append(name)
    out, skipped = {}, []
    for epoch, ns in seen.items():
        if len(ns) == 1:
            out[epoch] = ns[0]
        else:
            skipped += [Skipped(n, f"one of {len(ns)} files for epoch {epoch} ({', '.join(ns)}): "
                                   "never deleted; which is real is for a person to say") for n in ns]
    return out, skipped


def build(model: str, *, manifest: Mapping[int, Entry] | None, local: Mapping[str, int] | None,
          tracked: Mapping[str, int] | None, legacy_local: bool = False,
          values: Mapping[int, float] | None = None) -> Inventory:
    """Merge the sources into one item per epoch; PURE.

    manifest: the folder's rows, or None without a manifest.
    local: {name: size} from ``scan_local``, or None when there is no local folder.
    tracked: {name: size} of the tracked folder, or None for a folder with no store (flat mode).
    legacy_local: without a manifest, whether the local folder is the run's own default folder.
    values: the monitored metric by epoch (from the store's history); the manifest's otherwise.
    """
    values = values or {}
    if manifest is not None:
        return _bound(model, manifest, local or {}, tracked, values)
    items, skipped = [], []
    t_epochs, t_skip = _by_epoch(tracked or {}, model)
    l_epochs, l_skip = _by_epoch(local or {}, model)
    skipped += t_skip + l_skip
    if tracked is None:  # a flat folder: its files are all there is
        for e, n in sorted(l_epochs.items()):
            items.append(Item(e, n, local[n], None, values.get(e), True, False, True, "legacy"))
        return Inventory(model, tuple(items), tuple(skipped))
    ambiguous = {s.name for s in l_skip}  # never a copy of anything: a person must choose
    for e, n in sorted(t_epochs.items()):
        here = legacy_local and n not in ambiguous and (local or {}).get(n) == tracked[n]
        items.append(Item(e, n, tracked[n], None, values.get(e), True, True, here, "legacy"))
    for e, n in sorted(l_epochs.items()):
        if legacy_local and e not in t_epochs:  # written, upload never confirmed: kept
            items.append(Item(e, n, local[n], None, values.get(e), False, False, True, "legacy"))
        elif not (legacy_local and tracked.get(n) == local[n]):
            why = ("the folder is not this run's own (no manifest, not named after the run)"
                   if not legacy_local else "its size differs from the tracked copy's")
            skipped.append(Skipped(n, f"not ours: {why}; never deleted"))
    items.sort(key=lambda i: i.epoch)
    return Inventory(model, tuple(items), tuple(sorted(skipped, key=lambda s: s.name)))


def _bound(model: str, manifest: Mapping[int, Entry], local: Mapping[str, int],
           tracked: Mapping[str, int] | None, values: Mapping[int, float]) -> Inventory:
    items, skipped, vanished = [], [], []
    names = {e.name: e for e in manifest.values()}
    for epoch, e in sorted(manifest.items()):
        in_tracked = tracked is not None and e.name in tracked
        tracked_ok = in_tracked and tracked[e.name] == e.size
        here = local.get(e.name) == e.size
        value = values.get(epoch, e.value)
        if e.state == "deleted":
            if in_tracked or here:
                items.append(Item(epoch, e.name, e.size, e.sha256, value, tracked_ok, in_tracked, here,
                                  e.state, interrupted=True))
            else:
                vanished.append(epoch)
            continue
        stored = tracked_ok if tracked is not None else e.state == "stored"
        # Confirmed stored once, now gone from the store: someone deleted it there (a cleanup
        # on another machine, the UI). It counts as stored, so the policies decide: a dropped one
        # goes locally too, a kept one gets its tracked copy back on resume; never a re-upload
        # of something only because its upload "was not confirmed".
        lost = tracked is not None and not in_tracked and here and e.state == "stored"
        stored = stored or lost
        if not (in_tracked or here or (tracked is None and stored)):
            vanished.append(epoch)  # never finished saving, or deleted by hand on both sides
            continue
        if in_tracked and not tracked_ok:
            skipped.append(Skipped(e.name, f"the store lists {tracked[e.name]} bytes, the manifest "
                                           f"{e.size}: not confirmed stored, kept"))
        items.append(Item(epoch, e.name, e.size, e.sha256, value, stored, in_tracked, here, e.state,
                          lost_tracked=lost))
    for name, size in sorted(local.items()):
        e = names.get(name)
        if e is None:
            skipped.append(Skipped(name, "not ours: not in the run's manifest; never deleted"))
        elif size != e.size:
            skipped.append(Skipped(name, f"not ours: {size} bytes, the manifest says {e.size}; "
                                         "never deleted"))
    extra = {n: s for n, s in (tracked or {}).items() if n not in names}
    by_epoch, two_names = _by_epoch(extra, model)
    skipped += two_names
    for epoch, name in sorted(by_epoch.items()):
        if epoch in manifest:
            skipped.append(Skipped(name, f"a second tracked name for epoch {epoch}: kept"))
            continue
        # In the run's own artifact folder but not in the manifest (saved before the run had
        # one): the run's, known from the store alone.
        items.append(Item(epoch, name, extra[name], None, values.get(epoch), True, True, False, "stored"))
    items.sort(key=lambda i: i.epoch)
    return Inventory(model, tuple(items), tuple(sorted(skipped, key=lambda s: s.name)),
                     tuple(vanished), bound=True)
