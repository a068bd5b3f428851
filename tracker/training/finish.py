"""Finish a tracked run: the final model (best weights), evaluated exactly, logged once; the run closed."""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, RunTag

from hype.evaluate import reconstruction
from hype.train import TrainState
from tracker import layout
from tracker.checkpoints.files import save_atomic
from tracker.checkpoints.lifecycle import retained_tags
from tracker.policy import names
from tracker.store.errors import TrackingError
from tracker.training.callbacks import TrackedTraining, call_with_retry


@dataclass(frozen=True)
class Outcome:
    run_id: str
    experiment_id: str
    final_metrics: dict
    best_epoch: int | None
    stop_reason: str | None
    final_path: Path
    epochs_run: int
    tracking_seconds: float  # on the training thread
    train_seconds: float
    freed_bytes: int
    background_seconds: float = 0.0  # storing checkpoints on the uploader's thread
    final_epoch: int | None = None  # whose weights the final model holds (the best, unless they were lost)


def finish(tracked: TrackedTraining, state: TrainState, stop_reason: str | None) -> tuple[dict, Path, int]:
    """Save and log the final model (best weights), evaluate it exactly, close the run.
    Returns (final metrics, the final model's file, the epoch whose weights it holds)."""
    client, run_id, tconfig = tracked.client, tracked.run_id, tracked.tconfig
    tracked.drain()  # every queued checkpoint stored and retained before the final model
    tracked.confirm_pending_deletes()
    if tracked.ctx.checkpoints.models is not None:  # one best mark left, on the best's model
        call_with_retry(tracked.ctx.checkpoints.models.clear_stale_best, tracked.stop_state.best_epoch,
                        run_id=run_id, policy=None)  # it retries its own requests
    best_epoch = tracked.stop_state.best_epoch if tracked.best_emb is not None else None
    emb = tracked.best_emb if tracked.best_emb is not None else state.emb
    epoch = best_epoch if best_epoch is not None else state.epoch
    r = reconstruction(emb, tracked.graph, tracked.config.manifold)
    final = {"final_mean_rank": float(r.mean_rank), "final_map": float(r.map)}
    ckpt = state.checkpoint()
    ckpt.update(embeddings=emb.detach().clone(), epoch=epoch, final=True)
    path = tracked.local_dir / names.final_name(tconfig.model_name)
    with _disk_errors(path, run_id, state.epoch):
        save_atomic(ckpt, path)
        call_with_retry(client.log_artifact, run_id, str(path), layout.FINAL_FOLDER, run_id=run_id)
    call_with_retry(client.log_batch, run_id, metrics=[_metric(k, v, state.epoch) for k, v in final.items()],
                    run_id=run_id)
    from tracker.plot import log_disk_plot

    with _disk_errors(path, run_id, state.epoch):
        call_with_retry(log_disk_plot, client, run_id, emb, tracked.graph, tracked.config.manifold,
                        epoch=None, run_id=run_id)
        if tconfig.log_pyfunc:
            from tracker.serving.log import log_pyfunc, remove_pyfunc

            remove_pyfunc(client, run_id)  # a continued run still has one final model, the new one
            log_pyfunc(client, run_id, path)
    tags = {layout.TAG_FINAL_EPOCH: str(epoch), **retained_tags(tracked.progress.retained),
            layout.TAG_STOP_REASON: stop_reason or f"finished: reached {state.epoch} epochs"}
    if tracked.stop_state.best_epoch is not None:
        tags[layout.TAG_BEST_EPOCH] = str(tracked.stop_state.best_epoch)
        tags[layout.TAG_BEST_VALUE] = f"{tracked.stop_state.best:.6g}"
    call_with_retry(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()],
                    run_id=run_id)  # one request for all of them
    call_with_retry(client.set_terminated, run_id, "FINISHED", run_id=run_id)
    return final, path, epoch


# A full, quota-limited or read-only disk: the run's checkpoints are intact, so it is resumable.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def disk_error(exc: BaseException) -> OSError | None:
    """The disk error at the root of ``exc`` (MLflow wraps the OSError of a copy), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def _disk_errors(path: Path, run_id: str, epoch: int):
    """A disk error while writing the final model becomes the one line a per-epoch save gives."""
    try:
        yield
    except Exception as e:
        found = disk_error(e)
        if found is None:
            raise
        raise TrackingError(f"could not write the final model {path}: {found.strerror or found}; the "
                            f"run's checkpoints are kept (newest: epoch {epoch}). Free space, then "
                            f"finish it with: python cli.py train --resume {run_id}") from None


def _metric(key, value, step):
    return Metric(key, float(value), int(time.time() * 1000), step)
