"""Start, resume and finish a tracked run; the CLI's train command calls run_training()."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph, load_edge_csv
from hype.evaluate import reconstruction
from hype.train import TrainState, check_compatible, new_state, train
from tracker import layout
from tracker.checkpoints.files import CheckpointError, load, remove_temporaries, save_atomic
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.fmt import human_bytes
from tracker.policy import disk as diskguard
from tracker.policy import names, stopping
from tracker.policy.retention import CheckpointRecord
from tracker.store.errors import TrackingError
from tracker.store.open import get_or_create_experiment, open_tracking_store, tune_sqlite_commits
from tracker.store.redact import redact
from tracker.training import interrupts
from tracker.training.callbacks import Retained, TrackedTraining, TrackerConfig, call_with_retry, say


@dataclass(frozen=True)
class Outcome:
    run_id: str
    experiment_id: str
    final_metrics: dict
    best_epoch: int | None
    stop_reason: str | None
    final_path: Path
    epochs_run: int
    tracking_seconds: float
    train_seconds: float
    freed_bytes: int


def _dataset_params(graph: Graph) -> dict:
    return {"dataset_path": str(Path(graph.path).resolve()), "dataset_sha256": graph.sha256,
            "dataset_nodes": graph.num_nodes, "dataset_edges": graph.num_edges}


def start_run(client: MlflowClient, uri: str, graph: Graph, config: TrainConfig, tconfig: TrackerConfig,
              *, experiment: str, run_name: str | None) -> tuple[TrackedTraining, TrainState]:
    from mlflow.environment_variables import MLFLOW_RUN_ID

    tags = {layout.TAG_MODEL_NAME: tconfig.model_name, layout.TAG_MONITOR: tconfig.monitor}
    _make_folder(Path(tconfig.checkpoint_root))  # before the run exists: no orphan RUNNING run
    if MLFLOW_RUN_ID.get():  # `mlflow run` created the run (and logged its -P params): use it
        try:
            run = client.get_run(MLFLOW_RUN_ID.get())
        except MlflowException:
            raise TrackingError(f"MLFLOW_RUN_ID={MLFLOW_RUN_ID.get()} is not a run in {redact(uri)}; "
                                "unset it to start a new run") from None
        get_or_create_experiment(client, uri, client.get_experiment(run.info.experiment_id).name)
        for k, v in tags.items():
            client.set_tag(run.info.run_id, k, v)
    else:
        exp_id = get_or_create_experiment(client, uri, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    local_dir = Path(tconfig.checkpoint_root) / run_id
    local_dir.mkdir(parents=True, exist_ok=True)
    client.set_tag(run_id, layout.TAG_CHECKPOINT_DIR, str(local_dir.resolve()))
    params = {**config.to_dict(), **tconfig.params(), **_dataset_params(graph)}
    # A param is logged once: `mlflow run` already logged the -P values under the same names.
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in run.data.params])
    tracked = TrackedTraining(client, run_id, graph, config, tconfig, local_dir=local_dir,
                              store=TrackedCheckpoints(run_id, client=client),
                              stop_state=stopping.StopState(), retained=Retained())
    return tracked, new_state(graph, config)


def _run_configs(run) -> tuple[TrainConfig, TrackerConfig]:
    p = run.data.params
    config = TrainConfig.from_dict(p)
    keep = p.get("keep_checkpoints", "20")
    tconfig = TrackerConfig(
        model_name=p.get("model_name", run.data.tags.get(layout.TAG_MODEL_NAME, "model")),
        keep=None if keep in ("all", "0", "None") else int(keep),
        keep_best=p.get("keep_best", "True") == "True",
        monitor=p.get("monitor", "map"), mode=p.get("mode"), patience=int(p.get("patience", 6)),
        min_delta=float(p.get("min_delta", 0.0)), plot_every=int(p.get("plot_every", 0)),
        log_pyfunc=p.get("log_pyfunc", "True") == "True")
    return config, tconfig


def resume_run(client: MlflowClient, run_id: str, *, dataset: str | None = None,
               epochs: int | None = None, checkpoint_root: Path | None = None,
               force: bool = False, disk_margin: int | None = None,
               ) -> tuple[TrackedTraining, TrainState, Graph]:
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "not found" in str(e).lower():
            raise TrackingError(f"no run with id {run_id!r} in this tracking store") from None
        raise
    config, tconfig = _run_configs(run)
    tconfig = replace(tconfig, force=force,
                      disk_margin=tconfig.disk_margin if disk_margin is None else disk_margin)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    path = dataset or run.data.params.get("dataset_path")
    graph = load_edge_csv(path)
    if graph.sha256 != run.data.params.get("dataset_sha256", graph.sha256):
        raise TrackingError(f"{path} has changed since run {run_id} started (sha256 differs); "
                            "resume needs the same data")
    # --checkpoint-dir on resume wins; else the folder the run recorded; else the default
    if checkpoint_root is not None:
        local_dir = Path(checkpoint_root) / run_id
    else:
        recorded = run.data.tags.get(layout.TAG_CHECKPOINT_DIR)
        local_dir = Path(recorded) if recorded else Path(tconfig.checkpoint_root) / run_id
    _make_folder(local_dir)
    tconfig = replace(tconfig, checkpoint_root=local_dir.parent)
    for p in remove_temporaries(local_dir):
        say(f"Removed partial save left by the interrupted run: {p.name}")
    store = TrackedCheckpoints(run_id, client=client)
    retained = reconcile(store, local_dir, tconfig.model_name)
    state, unreadable = None, []
    for rec in reversed(retained.sorted()):  # newest first; skip any that does not load
        try:
            state = TrainState.from_checkpoint(_fetch(store, local_dir, rec.name))
            break
        except CheckpointError as e:
            say(f"WARNING: skipping {rec.name}: {e}")
            unreadable.append(str(e))
    if state is None and unreadable:
        raise TrackingError(f"run {run_id} has no loadable checkpoint to resume from: "
                            f"{len(unreadable)} retained, none loads (newest: {unreadable[0]})")
    if state is None and not _ever_retained(run):
        # Killed before its first checkpoint was stored: nothing was learnt that could be lost,
        # so the run starts again from epoch 0 with its own settings and seed.
        say(f"Run {run_id} stored no checkpoint before it stopped: starting it from epoch 0")
        state = new_state(graph, config)
    if state is None:
        raise TrackingError(f"run {run_id} has no retained checkpoint to resume from")
    try:
        check_compatible(state, graph, config)
    except ValueError as e:
        raise TrackingError(f"cannot resume run {run_id} from "
                            f"{names.checkpoint_name(tconfig.model_name, state.epoch)}: {e}") from None
    stop_cfg = tconfig.stop_config(config.burnin)
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, tconfig.monitor)]
    stop_state = stopping.replay(history, stop_cfg, upto=state.epoch)
    best_emb = None
    best = stop_state.best_epoch
    if best is not None and best in retained.records:
        best_emb = _fetch(store, local_dir, retained.records[best].name)["embeddings"]
    client.update_run(run_id, status="RUNNING")
    say(f"Resuming run {run_id} from {names.checkpoint_name(tconfig.model_name, state.epoch)} "
        f"(epoch {state.epoch}/{config.epochs})")
    tracked = TrackedTraining(client, run_id, graph, config, tconfig, local_dir=local_dir, store=store,
                              stop_state=stop_state, retained=retained, resumed_from=state.epoch or None,
                              best_emb=best_emb)
    tracked.apply_retention()  # no more than N on either side after a crash
    return tracked, state, graph


def _ever_retained(run) -> bool:
    """Whether the run ever held a checkpoint: its retained-count tag was above 0 at some point
    (the tag is sent with the metrics of the epoch after a checkpoint is stored)."""
    return int(run.data.tags.get(layout.TAG_RETAINED, "0") or 0) > 0


def reconcile(store: TrackedCheckpoints, local_dir: Path, model: str) -> Retained:
    """Merge the local folder and the tracked folder into one set of records.

    A local file the store lacks was written but its upload not confirmed: upload it now (after
    checking it loads). A tracked file with no local copy is fine: it is downloaded on demand.
    """
    tracked = store.list()
    retained = Retained()
    local = {}
    for p in local_dir.iterdir():
        parsed = names.parse_checkpoint_name(p.name)
        if parsed and parsed.model == model and p.is_file() and not p.is_symlink():
            local[p.name] = (parsed.epoch, p.stat().st_size)
    for name, size in tracked.items():
        parsed = names.parse_checkpoint_name(name)
        if parsed and parsed.model == model:
            retained.records[parsed.epoch] = CheckpointRecord(parsed.epoch, name, size, stored=True)
    for name, (epoch, size) in local.items():
        if epoch in retained.records:
            continue  # the store's copy stands: reconcile never overwrites what is stored
        try:
            load(local_dir / name)
        except CheckpointError as e:
            say(f"WARNING: local {name} is unreadable and was never stored; leaving it: {e}")
            continue
        store.upload(local_dir / name)
        say(f"Stored {name}, whose upload the interrupted run had not confirmed")
        retained.records[epoch] = CheckpointRecord(epoch, name, size, stored=True)
    return retained


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only mount, ...
        raise TrackingError(f"cannot use checkpoint folder {path}: {e.strerror or e}") from None


def _fetch(store: TrackedCheckpoints, local_dir: Path, name: str) -> dict:
    path = local_dir / name
    if not path.exists():
        say(f"Downloading {name} from the tracking store (no local copy)")
        path = store.download(name, local_dir)
        return load(path)
    try:
        return load(path)
    except CheckpointError as e:
        # The store's copy was confirmed (listed with its size) when it was uploaded: use it,
        # and replace the damaged local copy only once the downloaded one loads.
        say(f"WARNING: {e}; trying the tracking store's copy")
        with tempfile.TemporaryDirectory(dir=local_dir, prefix=".fetch-") as tmp:
            try:
                ckpt = load(store.download(name, tmp))
            except CheckpointError:
                raise CheckpointError(f"{e}; the tracking store's copy does not load either") from None
            os.replace(Path(tmp) / name, path)
        return ckpt


def finish(tracked: TrackedTraining, state: TrainState, stop_reason: str | None) -> tuple[dict, Path]:
    """Save and log the final model (best weights), evaluate it exactly, close the run."""
    client, run_id, tconfig = tracked.client, tracked.run_id, tracked.tconfig
    tracked.confirm_pending_deletes()
    best_epoch = tracked.stop_state.best_epoch if tracked.best_emb is not None else None
    emb = tracked.best_emb if tracked.best_emb is not None else state.emb
    epoch = best_epoch if best_epoch is not None else state.epoch
    r = reconstruction(emb, tracked.graph, tracked.config.manifold)
    final = {"final_mean_rank": float(r.mean_rank), "final_map": float(r.map)}
    ckpt = state.checkpoint()
    ckpt.update(embeddings=emb.detach().clone(), epoch=epoch, final=True)
    path = tracked.local_dir / names.final_name(tconfig.model_name)
    save_atomic(ckpt, path)
    call_with_retry(client.log_artifact, run_id, str(path), layout.FINAL_FOLDER, run_id=run_id)
    call_with_retry(client.log_batch, run_id, metrics=[_metric(k, v, state.epoch) for k, v in final.items()],
                    run_id=run_id)
    from tracker.plot import log_disk_plot

    call_with_retry(log_disk_plot, client, run_id, emb, tracked.graph, tracked.config.manifold, epoch=None,
                    run_id=run_id)
    if tconfig.log_pyfunc:
        from tracker.serving.log import log_pyfunc

        log_pyfunc(client, run_id, path)
    retained = tracked.retained.sorted()
    tags = {layout.TAG_FINAL_EPOCH: str(epoch), layout.TAG_RETAINED: str(len(retained)),
            layout.TAG_RETAINED_EPOCHS: ",".join(str(r.epoch) for r in retained),
            layout.TAG_STOP_REASON: stop_reason or f"finished: reached {state.epoch} epochs"}
    if tracked.stop_state.best_epoch is not None:
        tags[layout.TAG_BEST_EPOCH] = str(tracked.stop_state.best_epoch)
        tags[layout.TAG_BEST_VALUE] = f"{tracked.stop_state.best:.6g}"
    call_with_retry(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()],
                    run_id=run_id)  # one request for all of them
    call_with_retry(client.set_terminated, run_id, "FINISHED", run_id=run_id)
    return final, path


def _metric(key, value, step):
    return Metric(key, float(value), int(time.time() * 1000), step)


def run_training(*, uri: str, graph: Graph | None, config: TrainConfig | None,
                 tconfig: TrackerConfig | None, experiment: str = "hype", run_name: str | None = None,
                 resume: str | None = None, epochs: int | None = None,
                 checkpoint_root: Path | None = None, progress: bool = True, force: bool = False,
                 disk_margin: int | None = None) -> Outcome:
    tune_sqlite_commits()
    client = open_tracking_store(uri)
    if resume:
        tracked, state, graph = resume_run(client, resume, dataset=graph.path if graph else None,
                                           epochs=epochs, checkpoint_root=checkpoint_root,
                                           force=force, disk_margin=disk_margin)
    else:
        tracked, state = start_run(client, uri, graph, config, tconfig, experiment=experiment,
                                   run_name=run_name)
    run_id = tracked.run_id
    say(f"MLflow run {run_id} in {redact(uri)}; checkpoints in {tracked.local_dir}")
    check_disk(tracked, state)
    t0 = time.perf_counter()
    interrupted = False
    with interrupts.deferred():
        try:
            # With several workers, this process is rank 0: it alone tracks (hype.distributed)
            result = train(tracked.graph, tracked.config, state=state, callbacks=tracked, progress=progress)
            train_seconds = time.perf_counter() - t0
            # The run's last writes: Ctrl+C now waits for them, as there is nothing left to resume.
            with interrupts.section(raise_at_end=False):
                final, path = finish(tracked, result.state, result.stop_reason)
        except KeyboardInterrupt:
            interrupted = True  # marked below, once the traceback (and any frame it holds) is gone
        except BaseException:
            _mark(client, run_id, "FAILED")
            raise
    if interrupted:
        resume_hint = f"Resume with: python cli.py train --resume {run_id}"
        if _mark(client, run_id, "KILLED"):
            raise TrackingError(f"interrupted; run {run_id} marked KILLED. {resume_hint}")
        raise TrackingError(f"interrupted; run {run_id} could not be marked KILLED (the store did not "
                            f"answer) and still shows RUNNING. {resume_hint}")
    if interrupts.take_pending():
        say(f"Interrupted after run {run_id} finished: nothing was lost")
    total = tracked.written_bytes
    if total:
        say(f"Retention freed {human_bytes(tracked.freed_bytes)} "
            f"({100 * tracked.freed_bytes / total:.0f}%) in this run")
    return Outcome(run_id, call_with_retry(client.get_run, run_id, run_id=run_id).info.experiment_id, final,
                   tracked.stop_state.best_epoch, result.stop_reason, path, result.state.epoch,
                   tracked.tracking_seconds, train_seconds, tracked.freed_bytes)


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
    for attempt in range(3):
        try:
            client.set_terminated(run_id, status)
            return True
        except Exception:  # the store may be the thing that failed
            time.sleep(0.5 * (attempt + 1))
    return False
