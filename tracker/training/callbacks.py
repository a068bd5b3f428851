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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph
from hype.train import EpochResult, TrainState
from tracker import faults
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.fmt import say
from tracker.policy import names, stopping, supersede
from tracker.policy.retention import CheckpointRecord
from tracker.store import retry
from tracker.store.errors import StoreUnavailable, TrackingError
from tracker.training import interrupts
from tracker.training.config import TrackerConfig
from tracker.training.retain import RetentionPass
from tracker.training.storing import CheckpointJob, Snapshot, StoringPass
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


class TrackedTraining(RetentionPass, StoringPass):
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
        bound = ctx.tconfig.upload_bound()
        pace = None if ctx.tconfig.store_every else ctx.tconfig.upload_duty  # paced by replacing
        self.uploads = CheckpointQueue(bound, say=say, max_lag_s=ctx.tconfig.max_lag_s,
                                       yield_cores=ctx.tconfig.uploader_yields(ctx.config.workers),
                                       duty=pace) if bound else None
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
        choose = None if self.tconfig.store_every else (lambda waiting: self._replaceable(waiting, snap))
        self.uploads.submit(CheckpointJob(self, ckpt, snap), choose)
        self.tracking_seconds += time.perf_counter() - t0  # the hand-over, and any wait at the bound
        faults.point("queued")

    def _replaceable(self, waiting: list[CheckpointJob], snap: Snapshot) -> tuple[int | None, str]:
        """Which waiting job the checkpoint of ``snap`` replaces (tracker.policy.supersede)."""
        def record(s: Snapshot) -> CheckpointRecord:
            return CheckpointRecord(s.epoch, names.checkpoint_name(self.tconfig.model_name, s.epoch),
                                    value=snap.values.get(s.epoch))

        epoch, why = supersede.replaceable([record(j.snap) for j in waiting], self.progress.retained,
                                           record(snap), self.policies(snap))
        if epoch is None:
            return None, why
        return next(i for i, j in enumerate(waiting) if j.snap.epoch == epoch), why

    @property
    def replaced(self) -> int:
        """Checkpoints replaced by a newer one while the store was busy (their metrics went in)."""
        return self.uploads.replaced if self.uploads is not None else 0

    def snapshot(self, epoch: int) -> Snapshot:
        """What epoch ``epoch``'s job reads, as it is now (the epoch just ended)."""
        p = self.progress
        return Snapshot(epoch, dict(p.values), p.stop_state, p.resumed_from,
                        tuple(self.epoch_metrics), self.stop_reason)

    def drain(self) -> None:
        """Store the queued checkpoints (and retain); raise the uploader's failure. What the
        uploader has not started runs here, so Ctrl+C waits for each, as on the synchronous path."""
        if self.uploads is not None:
            with interrupts.section():
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
        # numbers: those are logged now (after the queued epochs) and read back as a replay reads
        # them: this step's last row in the history (the run's "latest" value is its highest
        # step, which after a rollback or a kill is another epoch's).
        value = logged
        if not math.isfinite(logged):
            self.drain()
            self._call(self.client.log_batch, self.run_id, metrics=self.epoch_metrics)
            history = self._call(self.client.get_metric_history, self.run_id, self.tconfig.monitor)
            value = dict(stopping.dedupe((m.step, m.value) for m in history)).get(epoch)
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

    # -- store calls -------------------------------------------------------------------------
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
