"""Run a tracked training end to end: start or resume, train, finish; Ctrl+C and failures
leave a run that says what happened. The CLI's train command calls run_training()."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph
from hype.train import TrainResult, TrainState, train
from tracker.fmt import human_bytes
from tracker.policy import disk as diskguard
from tracker.store.errors import StoreError, TrackingError
from tracker.store.open import open_tracking_store, tune_sqlite_commits
from tracker.store.redact import redact
from tracker.store.retry import RetryPolicy
from tracker.store.retry import call_with_retry as retry_call
from tracker.training import interrupts, warm
from tracker.training.callbacks import TrackedTraining, TrackerConfig, call_with_retry, say
from tracker.training.finish import Outcome, finish
from tracker.training.resume import resume_run
from tracker.training.start import start_run

# Marking a run KILLED or FAILED: the store may be the thing that failed, so try briefly.
MARK_RETRY = RetryPolicy(total_s=3.0, first_delay_s=0.5, max_delay_s=1.0)


def run_training(*, uri: str, graph: Graph | None, config: TrainConfig | None,
                 tconfig: TrackerConfig | None, experiment: str = "hype", run_name: str | None = None,
                 resume: str | None = None, epochs: int | None = None,
                 checkpoint_root: Path | None = None, progress: bool = True, force: bool = False,
                 disk_margin: int | None = None, given: dict | None = None,
                 from_epoch: int | None = None, init_from: str | None = None,
                 upload_queue: int | None = None, store_every: bool = False) -> Outcome:
    """resume: a run id to continue (from_epoch: from that retained epoch); init_from: a new run
    warm-started from RUN_ID[:EPOCH] or a checkpoint file (tracker.training.warm)."""
    tune_sqlite_commits()
    client = open_tracking_store(uri)
    if resume:
        tracked, state, graph = resume_run(client, resume, dataset=graph.path if graph else None,
                                           epochs=epochs, checkpoint_root=checkpoint_root,
                                           force=force, disk_margin=disk_margin, given=given,
                                           from_epoch=from_epoch, upload_queue=upload_queue,
                                           store_every=store_every)
    else:
        warm_start = None
        if init_from:  # read and matched before the run exists: a bad source creates no run
            source = warm.load_source(client, init_from, config, Path(tconfig.checkpoint_root))
            warm_start = (source, *warm.initial_state(source, graph, config))
        tracked, state = start_run(client, uri, graph, config, tconfig, experiment=experiment,
                                   run_name=run_name)
        if warm_start is not None:
            source, state, matched = warm_start
            warm.record(client, tracked.run_id, source, matched, graph.num_nodes)
    run_id = tracked.run_id
    say(f"MLflow run {run_id} in {redact(uri)}; checkpoints in {tracked.local_dir}")
    try:
        check_disk(tracked, state)
    except BaseException:
        tracked.stop_uploads()
        tracked.ctx.checkpoints.close()
        raise
    t0 = time.perf_counter()
    interrupted = False
    with interrupts.deferred():
        try:
            # With several workers, this process is rank 0: it alone tracks (hype.distributed)
            if tracked.progress.stopped:  # resumed after its early stop: only its final model is missing
                result = TrainResult(state, [], tracked.progress.stopped)
            else:
                result = train(tracked.graph, tracked.config, state=state, callbacks=tracked,
                               progress=progress)
            train_seconds = time.perf_counter() - t0
            # The run's last writes: Ctrl+C now waits for them, as there is nothing left to resume.
            with interrupts.section(raise_at_end=False):
                final, path, final_epoch = finish(tracked, result.state, result.stop_reason)
        except KeyboardInterrupt:
            interrupted = True  # marked below, once the traceback (and any frame it holds) is gone
        except BaseException:
            _mark(client, run_id, "FAILED")
            raise
        finally:
            # queued checkpoints finish (Ctrl+C, a failure) before the manifest closes
            tracked.stop_uploads(interrupted=interrupted)
            tracked.ctx.checkpoints.close()  # the run folder holds its files alone again
    if interrupted:
        resume_hint = f"Resume with: python cli.py train --resume {run_id}"
        if _mark(client, run_id, "KILLED"):
            raise TrackingError(f"interrupted; run {run_id} marked KILLED. {resume_hint}")
        raise TrackingError(f"interrupted; run {run_id} could not be marked KILLED (the store did not "
                            f"answer) and still shows RUNNING. {resume_hint}")
    if interrupts.take_pending():
        say(f"Interrupted after run {run_id} finished: nothing was lost")
    if tracked.replaced:
        q = tracked.uploads
        why = (f"the store was busy, or the uploader paced to {100 * q.duty:g}% of a core while the "
               f"ranks took every core (up to {q.paced_s:.1f} s between stores)"
               if q is not None and q.duty and q.paced_s else "the tracking store was busy")
        say(f"{tracked.replaced} checkpoint(s) were replaced by the next epoch's while {why} (kept "
            "by no policy but newest N; their metrics are logged); --store-every-checkpoint stores "
            "them all")
    total = tracked.written_bytes
    if total:
        say(f"Retention freed {human_bytes(tracked.freed_bytes)} "
            f"({100 * tracked.freed_bytes / total:.0f}%) in this run")
    return Outcome(run_id, call_with_retry(client.get_run, run_id, run_id=run_id).info.experiment_id, final,
                   tracked.stop_state.best_epoch, result.stop_reason, path, result.state.epoch,
                   tracked.tracking_seconds, train_seconds, tracked.freed_bytes, tracked.background_seconds,
                   final_epoch)


def check_disk(tracked: TrackedTraining, state: TrainState) -> None:
    """Refuse to start (unless --force) when the retained set would not fit; log the estimate."""
    tc = tracked.tconfig
    size = diskguard.measure_checkpoint(state.checkpoint(), tracked.local_dir)
    held = sum(p.stat().st_size for p in tracked.local_dir.glob("*.pth") if p.is_file())
    est = diskguard.estimate(size, keep=tc.keep, epochs=tracked.config.epochs,
                             free=diskguard.free_bytes(tracked.local_dir), margin=tc.disk_margin,
                             held_bytes=held)
    client, run_id = tracked.client, tracked.run_id
    existing = client.get_run(run_id).data.params
    params = {"checkpoint_bytes": est.checkpoint_bytes, "retained_bytes_max": est.retained_bytes_max}
    new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
    if new:
        client.log_batch(run_id, params=new)
    if est.ok:
        say(est.message)
        return
    if tc.force:
        say(f"WARNING: {est.message} (going on: --force)")
        return
    _mark(client, run_id, "FAILED")
    raise TrackingError(est.message)


def _mark(client: MlflowClient, run_id: str, status: str) -> bool:
    """Close the run with `status`; False when the store did not take it (resume still works)."""
    try:
        retry_call(f"mark run {run_id} {status}", lambda: client.set_terminated(run_id, status), MARK_RETRY)
        return True
    except StoreError:
        return False

