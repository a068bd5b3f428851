"""The glue: every training run is an MLflow run. Per epoch: log metrics -> save -> upload ->
confirm -> retain -> delete. Early stopping folds metric values read back from the store;
resume rebuilds everything from the store and the run's checkpoint folder.

What is never deleted: the final model, the best checkpoint (with keep_best), the checkpoint
the run resumed from, a checkpoint whose upload was not confirmed, and any file not ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from hype.config import TrainConfig
from hype.data import Graph
from hype.train import EpochResult, TrainState
from tracker import faults, layout
from tracker.checkpoints.files import save_atomic
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.fmt import human_bytes
from tracker.layout import PROJECT_ROOT
from tracker.policy import names, stopping
from tracker.policy.retention import CheckpointRecord, decide
from tracker.store import retry as stores
from tracker.store.errors import (
    DeleteUnsupported,
    StoreError,
    StorePermissionError,
    StoreUnavailable,
    TrackingError,
)
from tracker.training import interrupts

RETRY = stores.RetryPolicy()  # backoff while the tracking store is unreachable (about 60 s)


@dataclass(frozen=True)
class TrackerConfig:
    model_name: str = "model"  # file prefix: <model>_epoch0001.pth per epoch, <model>.pth final
    keep: int | None = 20  # newest epoch checkpoints kept per run (local and tracked); None keeps all
    keep_best: bool = True  # also keep the best checkpoint by `monitor`, outside the newest `keep`
    monitor: str = "map"  # metric for early stopping and "best": map, mean_rank, loss, map_sampled
    mode: str | None = None  # "max" or "min"; None infers it from the metric's name
    patience: int = 6  # evaluations after burn-in without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    checkpoint_root: Path = PROJECT_ROOT / "checkpoints"  # a run writes under <root>/<run_id>/
    plot_every: int = 0  # also log the Poincaré-disk picture every K epochs (0: only at the end)
    log_pyfunc: bool = True  # log the final embedding once as an MLflow (pyfunc) model
    disk_margin: int = 256 * 2**20  # bytes that must stay free after the retained checkpoints
    force: bool = False  # start even when the retained checkpoints would not fit

    def stop_config(self, burnin: int) -> stopping.StopConfig:
        mode = self.mode or stopping.infer_mode(self.monitor)
        # evaluations at epochs <= burnin do not count: the lr is divided by 100 there
        return stopping.StopConfig(self.patience, self.min_delta, mode, burnin + 1)

    def params(self) -> dict:
        return {"model_name": self.model_name,
                "keep_checkpoints": "all" if self.keep is None else self.keep,
                "keep_best": self.keep_best, "monitor": self.monitor,
                "mode": self.mode or stopping.infer_mode(self.monitor), "patience": self.patience,
                "min_delta": self.min_delta, "plot_every": self.plot_every,
                "log_pyfunc": self.log_pyfunc}


def say(msg: str) -> None:
    tqdm.write(msg)


@dataclass
class Retained:
    """What this run holds: epoch -> record, mirrored on the local disk and the tracking store."""

    records: dict[int, CheckpointRecord] = field(default_factory=dict)

    def sorted(self) -> list[CheckpointRecord]:
        return [self.records[e] for e in sorted(self.records)]


class TrackedTraining:
    """hype.train callbacks that track one MLflow run (fresh or resumed)."""

    def __init__(self, client: MlflowClient, run_id: str, graph: Graph, config: TrainConfig,
                 tconfig: TrackerConfig, *, local_dir: Path, store: TrackedCheckpoints,
                 stop_state: stopping.StopState, retained: Retained, resumed_from: int | None = None,
                 best_emb: torch.Tensor | None = None):
        self.client, self.run_id, self.graph = client, run_id, graph
        self.config, self.tconfig = config, tconfig
        self.local_dir, self.store = local_dir, store
        self.stop_cfg = tconfig.stop_config(config.burnin)
        self.stop_state = stop_state
        self.retained = retained
        self.resumed_from = resumed_from
        self.best_emb = best_emb
        self.freed_bytes = 0
        self.written_bytes = 0
        self.delete_warned = False
        self.unconfirmed_deletes: set[str] = set()  # deleted, not yet seen gone in a listing
        self.logged_tags: dict[str, str] = {}  # run tags as last sent, to send only changes
        self.retention_blocked = False  # the store refused a delete (permission): keep everything
        self.tracking_seconds = 0.0  # wall time spent in this class (logging, saving, retention)

    # -- per epoch -------------------------------------------------------------------------
    def on_epoch_end(self, result: EpochResult, state: TrainState) -> str | None:
        with interrupts.section():  # Ctrl+C waits for this epoch's bookkeeping
            return self._on_epoch_end(result, state)

    def on_checkpoint(self, state: TrainState) -> None:
        with interrupts.section():  # Ctrl+C waits until the checkpoint is stored and retained
            self._on_checkpoint(state)

    def _on_epoch_end(self, result: EpochResult, state: TrainState) -> str | None:
        t0 = time.perf_counter()
        values = {"loss": result.loss, "lr": result.lr, "epoch_seconds": result.seconds,
                  **result.metrics}
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, result.epoch) for k, v in values.items()]
        # Tags ride along only when they changed: each one costs a write in the store.
        tags = {layout.TAG_RETAINED: str(len(self.retained.records))}
        if self.stop_state.best_epoch is not None:
            tags[layout.TAG_BEST_EPOCH] = str(self.stop_state.best_epoch)
        changed = [RunTag(k, v) for k, v in tags.items() if self.logged_tags.get(k) != v]
        self._call(self.client.log_batch, self.run_id, metrics=metrics, tags=changed)
        self.logged_tags.update(tags)
        reason = None
        if self.tconfig.monitor in values:
            reason = self._decide_stop(result.epoch, state)
        if self.tconfig.plot_every and result.epoch % self.tconfig.plot_every == 0:
            from tracker.plot import log_disk_plot

            self._call(log_disk_plot, self.client, self.run_id, state.emb, self.graph,
                       self.config.manifold, epoch=result.epoch)
        self.tracking_seconds += time.perf_counter() - t0
        faults.point("epoch")
        return reason

    def _decide_stop(self, epoch: int, state: TrainState) -> str | None:
        # The decision reads the value back from the store (the latest of this metric, i.e.
        # the step just logged), so it is the same after a restart; cost is flat in epochs.
        run = self._call(self.client.get_run, self.run_id)
        value = run.data.metrics.get(self.tconfig.monitor)
        if value is None:
            raise TrackingError(f"the store did not return {self.tconfig.monitor} for epoch {epoch}")
        before = self.stop_state.best_epoch
        self.stop_state = stopping.fold(self.stop_state, epoch, value, self.stop_cfg)
        if self.stop_state.best_epoch == epoch and before != epoch:
            self.best_emb = state.emb.detach().clone()
        stop, reason = stopping.should_stop(self.stop_state, self.stop_cfg, self.tconfig.monitor)
        if stop:
            self._call(self.client.set_tag, self.run_id, layout.TAG_STOP_REASON, reason)
            say(reason)
            return reason
        return None

    def _on_checkpoint(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        name = names.checkpoint_name(self.tconfig.model_name, state.epoch)
        path = self.local_dir / name
        try:
            size = save_atomic(state.checkpoint(), path)
        except OSError as e:  # disk full, folder gone or read-only: the older checkpoints stay
            raise TrackingError(f"could not write checkpoint {path}: {e.strerror or e}; nothing was "
                                "deleted. Free space (or fix the folder), then resume with: "
                                f"python cli.py train --resume {self.run_id}") from None
        self.written_bytes += size
        self.retained.records[state.epoch] = CheckpointRecord(state.epoch, name, size, stored=False)
        self._upload(path)
        faults.point("upload")
        self.retained.records[state.epoch] = CheckpointRecord(state.epoch, name, size, stored=True)
        kept = len(self.retained.records)
        limit = "all" if self.tconfig.keep is None else self.tconfig.keep
        if self.tconfig.keep is None and self.written_bytes == size:  # first save of this process
            projected = size * (self.config.epochs - state.epoch + kept)
            say(f"WARNING: retention is disabled: keeping every checkpoint will take about "
                f"{human_bytes(projected)} here and in the tracking store by epoch {self.config.epochs}")
        if self.retention_blocked:
            shown, limit = kept, "all: retention blocked"
        else:
            shown = min(kept, self.tconfig.keep or kept)
        say(f"Checkpoint saved: {name} (keeping {shown}/{limit})")
        # The checkpoint we resumed from was protected until a newer one was confirmed stored,
        # which this one now is: from here on it is an old checkpoint like any other (protecting
        # it through this retention left N+1 behind when the run ended one epoch after resuming).
        self.resumed_from = None
        self.apply_retention()
        self.tracking_seconds += time.perf_counter() - t0

    # -- retention -------------------------------------------------------------------------
    def decisions(self):
        best = self.stop_state.best_epoch if self.tconfig.keep_best else None
        label = "best"
        if best is not None and self.stop_state.best is not None:
            label = f"best ({self.tconfig.monitor}={self.stop_state.best:.6g})"
        protect = [] if self.resumed_from is None else [self.resumed_from]
        return decide(self.retained.sorted(), keep=self.tconfig.keep, best_epoch=best,
                      protect=protect, best_label=label)

    def apply_retention(self) -> None:
        if self.retention_blocked:
            return
        for d in self.decisions():
            if d.keep:
                continue
            rec = d.record
            # Tracked copy first: if the store refuses (no permission), the local copy stays.
            try:
                self.store.delete(rec.name, confirm=False)  # confirmed by the next listing
                self.unconfirmed_deletes.add(rec.name)
                where = "local + tracked"
            except StorePermissionError as e:
                self.retention_blocked = True
                say(f"ERROR: retention cannot delete tracked checkpoints: {e}. This run keeps "
                    "every checkpoint, locally and in the store; free them later with: "
                    f"python cli.py cleanup --run-id {self.run_id}")
                self._call(self.client.set_tag, self.run_id, layout.TAG_RETENTION_ERROR,
                           "permission denied: deleting artifacts needs MANAGE")
                return
            except StoreUnavailable as e:
                raise TrackingError(f"{e}. Nothing was deleted locally; resume with: "
                                    f"python cli.py train --resume {self.run_id}") from None
            except DeleteUnsupported as e:
                if not self.delete_warned:
                    say(f"WARNING: {e}; tracked checkpoints are kept, local copies are deleted")
                    self.delete_warned = True
                where = "local only; the store cannot delete"
            faults.point("delete")
            (self.local_dir / rec.name).unlink(missing_ok=True)
            del self.retained.records[rec.epoch]
            self.freed_bytes += rec.size or 0
            say(f"Deleted old checkpoint: {rec.name} ({where}, {human_bytes(rec.size)} freed; {d.reason})")

    # -- store calls -------------------------------------------------------------------------
    def _upload(self, path: Path) -> None:
        try:
            stored = self.store.upload(path)
            self._confirm_deleted(stored.listing)
        except StoreError as e:
            raise TrackingError(
                f"could not store {path.name} in the tracking store ({e}); the checkpoint is safe at "
                f"{path} and nothing was deleted. Resume with: python cli.py train --resume {self.run_id}"
            ) from None

    def confirm_pending_deletes(self) -> None:
        """At the end of the run no upload follows: list once to confirm the last deletes."""
        if self.unconfirmed_deletes:
            self._confirm_deleted(self.store.list())

    def _confirm_deleted(self, listing: dict) -> None:
        """The last epoch's tracked deletes, confirmed by this epoch's upload listing (one request
        fewer per epoch than listing after each delete). One still listed is deleted again, and
        this time confirmed on its own."""
        for name in sorted(self.unconfirmed_deletes & listing.keys()):
            self.store.delete(name)
        self.unconfirmed_deletes.clear()

    def _call(self, fn, *args, **kwargs):
        """A tracking call, retried with backoff while the store is unreachable."""
        return call_with_retry(fn, *args, run_id=self.run_id, **kwargs)


def call_with_retry(fn, *args, run_id: str, **kwargs):
    """A tracking-store call, retried with backoff while the store is unreachable; then a clear
    error that says how to resume (local checkpoints are never deleted on this path)."""
    try:
        return stores.call_with_retry(getattr(fn, "__name__", "tracking call"),
                                      lambda: fn(*args, **kwargs), RETRY)
    except StoreUnavailable as e:
        raise TrackingError(f"{e}. Local checkpoints are kept; resume with: "
                            f"python cli.py train --resume {run_id}") from None
