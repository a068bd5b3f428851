"""One epoch's checkpoint job, on the uploader's thread (or the training thread without one), in
epoch order: write the bytes (temp file, fsync) -> the checkpoint's model, PENDING -> the epoch's
metrics (linked to it) and the run's changed tags, one request -> the manifest's row -> rename ->
upload -> confirm -> model READY -> retention. (Earlier bests' marks are cleared at the end.) Mixed into
TrackedTraining, as tracker.training.retain is."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.entities import RunTag
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH  # what MLflow sends as one request

from tracker import faults, layout
from tracker.checkpoints.files import Written, not_the_recorded, save_atomic
from tracker.checkpoints.lifecycle import retained_tags
from tracker.checkpoints.manifest import Entry
from tracker.checkpoints.models import linked
from tracker.fmt import human_bytes, say
from tracker.policy import names, stopping
from tracker.store.errors import StoreError, TrackingError


@dataclass(frozen=True)
class Snapshot:
    """What the policies read for one checkpoint, as it was when the epoch ended: the uploader
    decides retention for epoch e by what was known at e, never by a later epoch's best."""

    epoch: int
    values: dict[int, float]  # monitored metric by epoch, up to this one
    stop_state: stopping.StopState
    resumed_from: int | None
    metrics: tuple = ()  # the epoch's Metric rows, logged (linked to its checkpoint's model) by the job
    stop_reason: str | None = None  # early stopping's, decided at this epoch: a run tag beside them


class StoringPass:
    def _store_checkpoint(self, ckpt: dict, snap: Snapshot, carried: tuple = ()) -> None:
        """carried: the Metric rows of the epochs whose checkpoints this one replaced."""
        t0 = time.perf_counter()
        epoch = snap.epoch
        name = names.checkpoint_name(self.tconfig.model_name, epoch)
        path = self.local_dir / name
        manifest = self.ctx.checkpoints.manifest
        self._check_in_the_way(path, epoch)
        value = snap.values.get(epoch)

        model = None

        def record(tmp: Path, sha256: str) -> None:
            # The bytes are durable. Before the rename, so that no complete checkpoint exists that
            # the run's records do not name, nor one whose epoch's metrics the store lacks: the
            # model (PENDING), the epoch's metrics and tags, then the manifest's row.
            nonlocal model
            size = tmp.stat().st_size
            model = self._begin_model(name, epoch, size, sha256, snap)
            self._log_epoch(snap, model, carried)
            manifest.record(Entry(epoch, name, size, sha256, "written", value))

        try:
            size = save_atomic(ckpt, path, before_replace=record)
        except OSError as e:  # disk full, folder gone or read-only: the older checkpoints stay
            raise TrackingError(f"could not write checkpoint {path}: {e.strerror or e}; nothing was "
                                "deleted. Free space (or fix the folder), then resume with: "
                                f"python cli.py train --resume {self.run_id}") from None
        self.written_bytes += size
        # Hashed before the rename; as the rename left it, retention proves it ours unread.
        self.ctx.checkpoints.deleter.written[name] = Written.at(path)
        listing = self._upload(path)
        faults.point("upload")
        manifest.set_state(epoch, "stored")
        self._complete_model(model, name, epoch)
        if self.tconfig.keep is None and self.written_bytes == size:  # first save of this process
            projected = size * (self.config.epochs - epoch + len(self.progress.retained) + 1)
            say(f"WARNING: retention is disabled: keeping every checkpoint will take about "
                f"{human_bytes(projected)} here and in the tracking store by epoch {self.config.epochs}")
        # The checkpoint we resumed from was protected until a newer one was confirmed stored,
        # which this one now is: from here on it is an old checkpoint like any other.
        self.progress.resumed_from = None
        self.apply_retention(listing=listing, saved=name, snap=replace(snap, resumed_from=None))
        self.background_seconds += time.perf_counter() - t0

    def _log_epoch(self, snap: Snapshot, model, carried: tuple = ()) -> None:
        """The epoch's metrics (linked to its checkpoint's model), those of the epochs it replaced
        (``carried``) and the run's tags that changed, in one request. Tags ride along only
        when they changed: each one costs a write."""
        tags = retained_tags(self.progress.retained)
        if snap.stop_state.best_epoch is not None:
            tags[layout.TAG_BEST_EPOCH] = str(snap.stop_state.best_epoch)
        if snap.stop_reason:
            tags[layout.TAG_STOP_REASON] = snap.stop_reason
        changed = [RunTag(k, v) for k, v in tags.items() if self.logged_tags.get(k) != v]
        metrics = linked(snap.metrics, model.model_id if model is not None else None)
        if carried and len(carried) + len(metrics) + len(changed) > MAX_ENTITIES_PER_BATCH:
            # First, on their own: MLflow splits a long batch and sends the tags with its first
            # part, and the tags (the best epoch, what is retained) must not go in before them.
            self._call(self.client.log_batch, self.run_id, metrics=list(carried))
            carried = ()
        self._call(self.client.log_batch, self.run_id, metrics=[*carried, *metrics], tags=changed)
        self.logged_tags.update(tags)

    def _begin_model(self, name: str, epoch: int, size: int, sha256: str, snap: Snapshot):
        models = self.ctx.checkpoints.models
        if models is None:
            return None
        return self._store(models.begin, name, epoch, size=size, sha256=sha256,
                           best=snap.stop_state.best_epoch == epoch)

    def _complete_model(self, model, name: str, epoch: int) -> None:
        models = self.ctx.checkpoints.models
        if models is None or model is None:
            return
        self._store(models.complete, model, name, epoch)

    def _check_in_the_way(self, path: Path, epoch: int) -> None:
        """A file already at the next checkpoint's name is replaced only when it is this run's own
        (the manifest's row, same size and hash); anything else stops the run, untouched."""
        if not (path.exists() or path.is_symlink()):
            return
        row = self.ctx.checkpoints.manifest.entries().get(epoch)
        ours = (row is not None and row.name == path.name and row.sha256 is not None
                and not_the_recorded(path, row.size, row.sha256) is None)
        if not ours:
            raise TrackingError(f"{path} is in the way of epoch {epoch}'s checkpoint and is not this run's "
                                "(not the file its manifest records); it was left alone. Move it away, "
                                f"then resume with: python cli.py train --resume {self.run_id}")

    def _upload(self, path: Path) -> dict:
        try:
            return self.ctx.checkpoints.store.upload(path).listing
        except StoreError as e:
            raise TrackingError(
                f"could not store {path.name} in the tracking store ({e}); the checkpoint is safe at "
                f"{path} and nothing was deleted. Resume with: python cli.py train --resume {self.run_id}"
            ) from None


class CheckpointJob:
    """One epoch's checkpoint for the uploader; replacing an older job, it logs that one's metrics."""

    def __init__(self, tracked: StoringPass, ckpt: dict, snap: Snapshot):
        self.tracked, self.ckpt, self.snap = tracked, ckpt, snap
        self.carried: tuple = ()

    def absorb(self, older: CheckpointJob) -> None:
        self.carried = (*older.carried, *older.snap.metrics, *self.carried)

    def __call__(self) -> None:
        self.tracked._store_checkpoint(self.ckpt, self.snap, self.carried)
