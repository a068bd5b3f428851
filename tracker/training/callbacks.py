"""The glue: every training run is an MLflow run. Per epoch, on the training thread: decide early
stopping, snapshot the checkpoint, hand it over. Then, on the uploader's thread (or here when
there is none), in epoch order: write the checkpoint's bytes -> its model (PENDING) -> log the
epoch's metrics (linked to that model) and the run's changed tags in one request -> record in
the manifest -> rename -> upload -> confirm -> model READY -> retain (inventory -> policies ->
deleter -> bookkeeping). An epoch's metrics are in the store before its checkpoint exists, so a
resume from any checkpoint replays the history up to it. Early stopping folds the values as the
store holds them; resume rebuilds everything from the store and the run's manifest.

What is never deleted: the final model, a checkpoint kept by a policy (newest N, best K, every
k-th), the checkpoint the run resumed from, a checkpoint whose upload was not confirmed, and
any file that the run's manifest does not prove is its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph
from hype.train import EpochResult, TrainState
from tracker import faults, layout
from tracker.checkpoints.files import not_the_recorded, save_atomic, sha256_of
from tracker.checkpoints.lifecycle import RunCheckpoints, retained_tags
from tracker.checkpoints.manifest import Entry
from tracker.checkpoints.models import linked
from tracker.fmt import human_bytes, say
from tracker.policy import names, stopping
from tracker.policy.retention import CheckpointRecord
from tracker.store import retry
from tracker.store.errors import StoreError, StoreUnavailable, TrackingError
from tracker.training import interrupts
from tracker.training.config import TrackerConfig
from tracker.training.retain import RetentionPass
from tracker.training.uploader import CheckpointQueue

__all__ = ["Progress", "RunContext", "Snapshot", "TrackedTraining", "TrackerConfig", "call_with_retry", "say"]

RETRY = retry.RetryPolicy()  # backoff while the tracking store is unreachable (about 60 s)


@dataclass
class RunContext:
    """What every part of a tracked run shares: where it is tracked and what it trains."""

    client: MlflowClient
    run_id: str
    graph: Graph
    config: TrainConfig
    tconfig: TrackerConfig
    checkpoints: RunCheckpoints  # the run's verified folder, manifest and tracked folder

    @property
    def local_dir(self) -> Path:
        return self.checkpoints.folder


@dataclass
class Progress:
    """What a run has learnt so far, rebuilt on resume from the store's history."""

    stop_state: stopping.StopState = field(default_factory=stopping.StopState)
    values: dict[int, float] = field(default_factory=dict)  # monitored metric after burn-in, by epoch
    retained: list[CheckpointRecord] = field(default_factory=list)  # what the run holds now
    resumed_from: int | None = None  # protected until a newer checkpoint is stored
    best_emb: torch.Tensor | None = None  # weights of the best epoch, for the final model
    stopped: str | None = None  # resumed after it had stopped early: train nothing, finish it


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


class TrackedTraining(RetentionPass):
    """hype.train callbacks that track one MLflow run (fresh or resumed)."""

    def __init__(self, ctx: RunContext, progress: Progress):
        self.ctx, self.progress = ctx, progress
        self.client, self.run_id, self.graph = ctx.client, ctx.run_id, ctx.graph
        self.config, self.tconfig = ctx.config, ctx.tconfig
        self.local_dir = ctx.local_dir
        self.stop_cfg = ctx.tconfig.stop_config(ctx.config.burnin)
        self.freed_bytes = 0
        self.written_bytes = 0
        self.delete_warned = False
        self.logged_tags: dict[str, str] = {}  # run tags as last sent, to send only changes
        self.retention_blocked = False  # the store refused a delete (permission): keep everything
        self.tracking_seconds = 0.0  # training-thread time spent here (logging, handing over, waiting)
        self.background_seconds = 0.0  # time spent storing checkpoints (on the uploader's thread)
        bound = ctx.tconfig.upload_bound(ctx.config.workers)
        self.uploads = CheckpointQueue(bound, say=say) if bound else None
        self.marked_best = progress.stop_state.best_epoch  # whose checkpoint model says "best"
        self.epoch_metrics: list[Metric] = []  # the last epoch's, handed to its checkpoint's job
        self.stop_reason: str | None = None  # the last epoch's early-stopping decision

    @property
    def stop_state(self) -> stopping.StopState:
        return self.progress.stop_state

    @property
    def best_emb(self) -> torch.Tensor | None:
        return self.progress.best_emb

    # -- per epoch -------------------------------------------------------------------------
    def on_epoch_end(self, result: EpochResult, state: TrainState) -> str | None:
        with interrupts.section():  # Ctrl+C waits for this epoch's bookkeeping
            return self._on_epoch_end(result, state)

    def on_checkpoint(self, state: TrainState) -> None:
        """Snapshot the checkpoint (the embedding cloned, the RNG state, what the policies read)
        and store it: on the uploader's thread when there is one, else here."""
        ckpt = state.checkpoint()
        ckpt["run_id"] = self.run_id  # the file says whose it is, as the manifest does
        snap = self.snapshot(state.epoch)
        if self.uploads is None:
            t0, before = time.perf_counter(), self.background_seconds
            with interrupts.section():  # Ctrl+C waits until the checkpoint is stored and retained
                self._store_checkpoint(ckpt, snap)
            self.background_seconds = before  # on this thread: it is the training thread's time
            self.tracking_seconds += time.perf_counter() - t0
            return
        t0 = time.perf_counter()
        self.uploads.submit(lambda: self._store_checkpoint(ckpt, snap))
        self.tracking_seconds += time.perf_counter() - t0  # the hand-over, and any wait at the bound
        faults.point("queued")

    def snapshot(self, epoch: int) -> Snapshot:
        """What epoch ``epoch``'s job reads, as it is now (the epoch just ended)."""
        p = self.progress
        return Snapshot(epoch, dict(p.values), p.stop_state, p.resumed_from,
                        tuple(self.epoch_metrics), self.stop_reason)

    def drain(self) -> None:
        """Wait for the queued checkpoints (stored and retained); raise the uploader's failure."""
        if self.uploads is not None:
            self.uploads.drain()

    def stop_uploads(self, *, interrupted: bool = False) -> None:
        """After a failure or Ctrl+C: let the queued checkpoints finish (their failure was or will
        be reported by the caller's own error), then stop the uploader's thread."""
        if self.uploads is None:
            return
        if interrupted:  # the uploader may be mid-write (or just done): say what is waited for
            say(f"Interrupted: finishing the tracking writes ({self.uploads.pending} checkpoint(s) "
                "still being stored; Ctrl+C again to abort at once)")
        try:
            self.uploads.drain()
        except Exception:  # noqa: BLE001 - the run is failing already; this is its cleanup
            pass
        self.uploads.close()

    def _on_epoch_end(self, result: EpochResult, state: TrainState) -> str | None:
        if self.uploads is not None:
            self.uploads.check()  # a failed upload stops training at the next epoch
        t0 = time.perf_counter()
        values = {"loss": result.loss, "lr": result.lr, "epoch_seconds": result.seconds,
                  **result.metrics}
        now = int(time.time() * 1000)
        # Logged by this epoch's checkpoint job, in the request that links them to its model.
        self.epoch_metrics = [Metric(k, float(v), now, result.epoch) for k, v in values.items()]
        self.stop_reason = None
        if self.tconfig.monitor in values:
            self.stop_reason = self._decide_stop(result.epoch, state, float(values[self.tconfig.monitor]))
        reason = self.stop_reason
        if self.tconfig.plot_every and result.epoch % self.tconfig.plot_every == 0:
            from tracker.plot import log_disk_plot

            self._call(log_disk_plot, self.client, self.run_id, state.emb, self.graph,
                       self.config.manifold, epoch=result.epoch)
        self.tracking_seconds += time.perf_counter() - t0
        faults.point("epoch")
        return reason

    def _decide_stop(self, epoch: int, state: TrainState, logged: float) -> str | None:
        # The decision folds the value as the store holds it, so that a resume, which replays the
        # store's history, decides the same. A finite float64 is stored and returned bit for bit
        # (SQLite REAL, PostgreSQL/MySQL double, JSON's shortest repr), and log_batch has just
        # succeeded: that value is the logged one, with no read. NaN and inf are stored as other
        # numbers: those are read back (the latest of this metric is the step just logged).
        value = logged
        if not math.isfinite(logged):  # logged now, after the queued epochs, and read back
            self.drain()
            self._call(self.client.log_batch, self.run_id, metrics=self.epoch_metrics)
            run = self._call(self.client.get_run, self.run_id)
            value = run.data.metrics.get(self.tconfig.monitor)
            if value is None:
                raise TrackingError(f"the store did not return {self.tconfig.monitor} for epoch {epoch}")
        p = self.progress
        if epoch >= self.stop_cfg.burnin:
            p.values[epoch] = float(value)  # what best K ranks by, as cleanup reads it from the store
        before = p.stop_state.best_epoch
        p.stop_state = stopping.fold(p.stop_state, epoch, value, self.stop_cfg)
        if p.stop_state.best_epoch == epoch and before != epoch:
            p.best_emb = state.emb.detach().clone()
        stop, reason = stopping.should_stop(p.stop_state, self.stop_cfg, self.tconfig.monitor)
        if stop:
            say(reason)  # the run's tag says it too, beside this epoch's metrics
            return reason
        return None

    def _store_checkpoint(self, ckpt: dict, snap: Snapshot) -> None:
        t0 = time.perf_counter()
        epoch = snap.epoch
        name = names.checkpoint_name(self.tconfig.model_name, epoch)
        path = self.local_dir / name
        manifest = self.ctx.checkpoints.manifest
        self._check_in_the_way(path, epoch)
        value = snap.values.get(epoch)

        model = None

        def record(tmp: Path) -> None:
            # The bytes are durable. Before the rename, so that no complete checkpoint exists that
            # the run's records do not name, nor one whose epoch's metrics the store lacks: the
            # model (PENDING), the epoch's metrics and tags, then the manifest's row.
            nonlocal model
            size, sha256 = tmp.stat().st_size, sha256_of(tmp)
            model = self._begin_model(name, epoch, size, sha256, snap)
            self._log_epoch(snap, model)
            manifest.record(Entry(epoch, name, size, sha256, "written", value))

        try:
            size = save_atomic(ckpt, path, before_replace=record)
        except OSError as e:  # disk full, folder gone or read-only: the older checkpoints stay
            raise TrackingError(f"could not write checkpoint {path}: {e.strerror or e}; nothing was "
                                "deleted. Free space (or fix the folder), then resume with: "
                                f"python cli.py train --resume {self.run_id}") from None
        self.written_bytes += size
        listing = self._upload(path)
        faults.point("upload")
        manifest.set_state(epoch, "stored")
        self._complete_model(model, name, epoch, snap)
        if self.tconfig.keep is None and self.written_bytes == size:  # first save of this process
            projected = size * (self.config.epochs - epoch + len(self.progress.retained) + 1)
            say(f"WARNING: retention is disabled: keeping every checkpoint will take about "
                f"{human_bytes(projected)} here and in the tracking store by epoch {self.config.epochs}")
        # The checkpoint we resumed from was protected until a newer one was confirmed stored,
        # which this one now is: from here on it is an old checkpoint like any other.
        self.progress.resumed_from = None
        self.apply_retention(listing=listing, saved=name, snap=replace(snap, resumed_from=None))
        self.background_seconds += time.perf_counter() - t0

    def _log_epoch(self, snap: Snapshot, model) -> None:
        """The epoch's metrics (linked to its checkpoint's model) and the run's tags that changed,
        in one request. Tags ride along only when they changed: each one costs a write."""
        tags = retained_tags(self.progress.retained)
        if snap.stop_state.best_epoch is not None:
            tags[layout.TAG_BEST_EPOCH] = str(snap.stop_state.best_epoch)
        if snap.stop_reason:
            tags[layout.TAG_STOP_REASON] = snap.stop_reason
        changed = [RunTag(k, v) for k, v in tags.items() if self.logged_tags.get(k) != v]
        metrics = linked(snap.metrics, model.model_id if model is not None else None)
        self._call(self.client.log_batch, self.run_id, metrics=metrics, tags=changed)
        self.logged_tags.update(tags)

    def _begin_model(self, name: str, epoch: int, size: int, sha256: str, snap: Snapshot):
        models = self.ctx.checkpoints.models
        if models is None:
            return None
        return self._store(models.begin, name, epoch, size=size, sha256=sha256,
                           best=snap.stop_state.best_epoch == epoch)

    def _complete_model(self, model, name: str, epoch: int, snap: Snapshot) -> None:
        models = self.ctx.checkpoints.models
        if models is None or model is None:
            return
        self._store(models.complete, model, name, epoch)
        best = snap.stop_state.best_epoch
        if best == epoch and self.marked_best not in (None, epoch):
            self._store(models.mark_best, epoch, self.marked_best)
        if best == epoch:
            self.marked_best = epoch

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

    # -- store calls -------------------------------------------------------------------------
    def _upload(self, path: Path) -> dict:
        try:
            return self.ctx.checkpoints.store.upload(path).listing
        except StoreError as e:
            raise TrackingError(
                f"could not store {path.name} in the tracking store ({e}); the checkpoint is safe at "
                f"{path} and nothing was deleted. Resume with: python cli.py train --resume {self.run_id}"
            ) from None

    def _call(self, fn, *args, **kwargs):
        """A tracking call, retried with backoff while the store is unreachable."""
        return call_with_retry(fn, *args, run_id=self.run_id, **kwargs)

    def _store(self, fn, *args, **kwargs):
        """A call that retries on its own (the checkpoint models): the same resume hint after."""
        return call_with_retry(fn, *args, run_id=self.run_id, policy=None, **kwargs)


def call_with_retry(fn, *args, run_id: str, policy: retry.RetryPolicy | None = RETRY, **kwargs):
    """A tracking-store call through the one retry helper (policy None: ``fn`` retries itself);
    an outage that outlasts it becomes a clear error that says how to resume (local checkpoints
    are never deleted on this path)."""
    try:
        if policy is None:
            return fn(*args, **kwargs)
        return retry.call_with_retry(getattr(fn, "__name__", "tracking call"),
                                     lambda: fn(*args, **kwargs), policy)
    except StoreUnavailable as e:
        raise TrackingError(f"{e}. Local checkpoints are kept; resume with: "
                            f"python cli.py train --resume {run_id}") from None
