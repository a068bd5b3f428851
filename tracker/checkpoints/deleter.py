"""The one deleter: a run's checkpoint goes from the store first, then from the local disk.

Used by the trainer's retention, resume and every cleanup mode, with one failure rule:
- the manifest row is marked ``deleted`` first (the intent), so a kill mid-way is finished by
  the next pass instead of being undone by a re-upload;
- the tracked copy is deleted next. If the store refuses (permission) or cannot be reached,
  the row goes back to what it was, the local copy is kept, and the error is raised: the
  caller stops deleting in that run (trainer and cleanup alike). Any other store failure
  keeps the local copy and is returned as a failed deletion. A store that cannot delete at
  all (``DeleteUnsupported``) keeps the tracked copy; the local one is still deleted;
- the local copy is deleted only if it is still the file the records say: a regular file
  (never a link), of the recorded size and, with a manifest, of the recorded sha256.
  Otherwise it is kept and reported as "not ours".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tracker import faults
from tracker.checkpoints.files import Written, not_the_recorded
from tracker.checkpoints.inventory import Item
from tracker.checkpoints.manifest import Manifest
from tracker.checkpoints.models import CheckpointModels
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy.names import parse_checkpoint_name
from tracker.store.errors import DeleteUnsupported, StoreError, StorePermissionError, StoreUnavailable
from tracker.store.redact import one_line


@dataclass(frozen=True)
class Deletion:
    item: Item  # what was deleted
    reason: str  # why (the policy's words, or "finishing an interrupted deletion")
    status: str  # "deleted", "already gone", "would delete", "failed"
    tracked: str = "-"  # "deleted", "absent", "kept: the store cannot delete", "failed"
    local: str = "-"  # "deleted", "absent", "not ours: ...", "kept: ..."
    error: str | None = None  # for "failed": one line
    freed: int = 0  # bytes freed on the local disk (or that would be, in a dry run)

    @property
    def where(self) -> str:
        sides = [s for s, v in (("tracked", self.tracked), ("local", self.local)) if v == "deleted"]
        return " + ".join(sides) or "nothing"


class Deleter:
    def __init__(self, *, store: TrackedCheckpoints | None, folder: Path | None,
                 manifest: Manifest | None, models: CheckpointModels | None = None):
        self.store, self.folder, self.manifest, self.models = store, folder, manifest, models
        # {file name: Written}: files this process wrote and hashed (the trainer's checkpoints)
        self.written: dict[str, Written] = {}

    def plan_only(self, item: Item, reason: str) -> Deletion:
        return Deletion(item, reason, "would delete", "would delete" if item.tracked else "absent",
                        "would delete" if item.local else "absent",
                        freed=(item.size or 0) if item.local else 0)

    def delete(self, item: Item, reason: str, *, confirm: bool = True) -> Deletion:
        """Delete one checkpoint, tracked copy first. Raises StorePermissionError and
        StoreUnavailable (nothing of this item is deleted then); see the module docstring.

        confirm=False skips the listing that confirms the tracked delete: the trainer's next
        upload lists the folder anyway, and an item still listed is deleted again then.
        """
        if parse_checkpoint_name(item.name) is None:  # also rules out separators and ".."
            return Deletion(item, reason, "failed", error=f"refusing to delete {item.name!r}: "
                                                          "not a checkpoint name")
        before = item.state
        if self.manifest is not None:
            self.manifest.set_state(item.epoch, "deleted")
        tracked = "absent"
        if self.models is not None:  # the UI's row goes first: it never points at a deleted file
            failed = self._store_side(lambda: self.models.delete(item.epoch), item, before, reason,
                                      "kept: its model is still listed")
            if failed is not None:
                return failed
        if item.tracked and self.store is not None:
            def delete_tracked() -> None:
                nonlocal tracked
                try:
                    self.store.delete(item.name, confirm=confirm)
                    tracked = "deleted"
                except DeleteUnsupported:
                    tracked = "kept: the store cannot delete"

            failed = self._store_side(delete_tracked, item, before, reason,
                                      "kept: its tracked copy is still there")
            if failed is not None:
                return failed
        faults.point("delete")
        local, freed, error = "absent", 0, None
        if item.local and self.folder is not None:
            try:
                local = self._delete_local(item)
                freed = (item.size or 0) if local == "deleted" else 0
            except OSError as e:
                local, error = "failed", f"{self.folder / item.name}: {e.strerror or e}"
        if error:
            status = "failed"
        elif "deleted" in (tracked, local):
            status = "deleted"
        else:
            status = "already gone"
        if local.startswith("not ours") and tracked in ("deleted", "absent") and self.manifest is not None:
            # Nothing of this checkpoint is left but a file that is not it: the row has nothing
            # more to account for, and the file is reported as not in the manifest from now on.
            self.manifest.forget(item.epoch)
        return Deletion(item, reason, status, tracked, local, error, freed)

    def _store_side(self, delete, item: Item, before: str, reason: str, kept: str) -> Deletion | None:
        """One deletion in the store (the checkpoint's model, its tracked copy), by the one failure
        rule: a refusal or an outage puts the row back and is raised (the caller stops deleting in
        that run); any other store failure puts it back and is this item's failed deletion, with
        the local copy ``kept``. None when it went through."""
        try:
            delete()
        except (StorePermissionError, StoreUnavailable):
            self._restore(item, before)
            raise
        except StoreError as e:
            self._restore(item, before)
            return Deletion(item, reason, "failed", "failed", kept, error=one_line(e))
        return None

    def _restore(self, item: Item, state: str) -> None:
        if self.manifest is not None and state in ("written", "stored"):
            self.manifest.set_state(item.epoch, state)

    def _delete_local(self, item: Item) -> str:
        path = self.folder / item.name
        try:
            why = not_the_recorded(path, item.size, item.sha256, written=self.written.get(item.name))
        except FileNotFoundError:
            self.written.pop(item.name, None)
            return "absent"
        if why is not None:
            return f"not ours: {why}; kept"
        os.unlink(path)
        self.written.pop(item.name, None)
        return "deleted"
