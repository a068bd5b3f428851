"""Resume a tracked run from its newest retained checkpoint, in its own verified folder.

The folder comes from --checkpoint-dir, else the run's tag (a hint, verified by the folder's
manifest), else ``checkpoints/<run_id>``. Reconcile is the lifecycle's inventory: a checkpoint
the manifest holds as written but the store lacks is uploaded (after its hash and a load are
checked); anything the manifest does not name is not ours and is left alone.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph, load_edge_csv
from hype.train import TrainState, check_compatible
from tracker import layout
from tracker.checkpoints import folder as run_folder
from tracker.checkpoints.files import CheckpointError, remove_temporaries
from tracker.checkpoints.inventory import Inventory
from tracker.checkpoints.lifecycle import Plan, RunCheckpoints
from tracker.checkpoints.models import CheckpointModels
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy import names, stopping
from tracker.policy import resume as resume_policy
from tracker.policy.retention import monitored_values, roll_back
from tracker.store.errors import TrackingError
from tracker.training import history, recover
from tracker.training.callbacks import Progress, RunContext, TrackedTraining, say
from tracker.training.config import TrackerConfig
from tracker.training.start import bind_folder, make_folder


def _run_configs(run, params: dict):
    """The run's configs from its params as earlier resumes changed them (``params``)."""
    from hype.config import TrainConfig

    return TrainConfig.from_dict(params), TrackerConfig.from_params(params, run.data.tags)


def resolve_folder(run, run_id: str, tconfig: TrackerConfig,
                   checkpoint_root: Path | None) -> run_folder.RunFolder:
    """The run's folder, verified; TrackingError (one line) when the hint does not check out."""
    if checkpoint_root is not None:
        found = run_folder.verify(Path(checkpoint_root) / run_id, run_id)
    else:
        found = run_folder.locate(run_id, hint=run.data.tags.get(layout.TAG_CHECKPOINT_DIR),
                                  root=Path(tconfig.checkpoint_root))
    if found.problem is not None:
        raise TrackingError(f"cannot resume run {run_id}: {found.problem}. Pass --checkpoint-dir "
                            "ROOT (the folder that holds <run_id>/) to say where its checkpoints are")
    if found.note:
        say(found.note)
    return found


def resume_run(client: MlflowClient, run_id: str, *, dataset: str | None = None,
               epochs: int | None = None, checkpoint_root: Path | None = None,
               force: bool = False, disk_margin: int | None = None, given: dict | None = None,
               from_epoch: int | None = None, upload_queue: int | None = None,
               store_every: bool = False) -> tuple[TrackedTraining, TrainState, Graph]:
    """given: the options the command line named (click's names), checked by policy.resume.
    from_epoch: go on from this retained epoch; the run's later checkpoints are rolled back."""
    run = _hype_run(client, run_id)
    overlay = run.data.tags.get(layout.TAG_RESUMED_PARAMS)
    try:
        params = resume_policy.effective(run.data.params, overlay)
        config, tconfig = _run_configs(run, params)
    except ValueError as e:
        where = f"its resume record (tag {layout.TAG_RESUMED_PARAMS}) " if overlay else ""
        raise TrackingError(f"cannot resume run {run_id}: {where}{e}; nothing was changed") from None
    tconfig = replace(tconfig, force=force,  # about this process only: used, not recorded
                      disk_margin=tconfig.disk_margin if disk_margin is None else disk_margin,
                      upload_queue=tconfig.upload_queue if upload_queue is None else upload_queue,
                      store_every=store_every)
    given = dict(given or {})
    if epochs is not None:
        given["epochs"] = epochs
    epochs = given.get("epochs")
    changes, refused = resume_policy.plan(
        given, params, experiment=client.get_experiment(run.info.experiment_id).name,
        run_name=run.info.run_name)
    if refused:
        raise TrackingError(f"cannot resume run {run_id}: {'; '.join(refused)}; nothing was changed")
    try:
        config = replace(config, **{c.option: given[c.option] for c in changes
                                    if c.option in TRAIN_FIELDS and c.option != "epochs"})
        tconfig = replace(tconfig, **{c.option: given[c.option] for c in changes
                                      if c.option in TRACKER_FIELDS})
    except ValueError as e:
        raise TrackingError(f"cannot resume run {run_id}: {e}") from None
    ran = history.epochs_ran(client, run_id)
    # Closed by hype's finish (its last tags, then the status): log_pyfunc's own end_run also
    # says FINISHED, and a kill right after it leaves a run that still needs finishing.
    finished = run.info.status == "FINISHED" and layout.TAG_FINAL_EPOCH in run.data.tags
    history.check_epochs(run, ran, epochs, from_epoch, finished, config.epochs)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    path = dataset or run.data.params.get("dataset_path")
    graph = load_edge_csv(path)
    if graph.sha256 != run.data.params.get("dataset_sha256", graph.sha256):
        raise TrackingError(f"{path} has changed since run {run_id} started (sha256 differs); "
                            "resume needs the same data")
    ck, tconfig = _open_checkpoints(client, run, run_id, tconfig, checkpoint_root)
    try:
        if ck.legacy_local:
            recover.adopt_legacy(ck, ck.store.list())
        stop_cfg = tconfig.stop_config(config.burnin)
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, tconfig.monitor)]
        values = monitored_values(logged, start=stop_cfg.burnin)
        inv = recover.reconcile(ck, values, tconfig.policies(values))
        if from_epoch is not None and from_epoch not in {i.epoch for i in inv.items if not i.interrupted}:
            held = ", ".join(str(i.epoch) for i in inv.items if not i.interrupted) or "none"
            raise TrackingError(f"--from-epoch {from_epoch}: run {run_id} holds no checkpoint of that epoch "
                                f"(retained epochs: {held})")
        point = recover.load_newest(ck, inv, upto=from_epoch)
        state = _start_state(client, run, point, graph, config, from_epoch, tconfig.checkpoint_root)
        try:
            check_compatible(state, graph, config)
        except ValueError as e:
            raise TrackingError(f"cannot resume run {run_id} from "
                                f"{names.checkpoint_name(tconfig.model_name, state.epoch)}: {e}") from None
        if point.item is not None:
            recover.verify_tracked(ck, point.item)
        inv = _roll_back(ck, inv, state.epoch, from_epoch, values)
        stop_state = stopping.replay(logged, stop_cfg, upto=state.epoch)
        stopped = None
        if finished and from_epoch is None:
            # Asked to go on past its stop: keep its best, give patience back, and say so.
            stop_state = replace(stop_state, bad_evals=0)
            say(f"Continuing FINISHED run {run_id} past its stop "
                f"({run.data.tags.get(layout.TAG_STOP_REASON, 'finished')}) up to epoch {config.epochs}")
        else:
            stop, why = stopping.should_stop(stop_state, stop_cfg, tconfig.monitor)
            stopped = why if stop else None  # it had stopped there: only its final model is missing
        progress = Progress(stop_state, {e: v for e, v in values.items() if e <= state.epoch},
                            inv.records(), resumed_from=state.epoch or None, stopped=stopped)
        progress.best_emb = _best_weights(ck, inv, stop_state, point, tconfig.monitor)
        retained = {i.epoch: (i.name, i.size, i.sha256) for i in inv.items if i.stored and not i.interrupted}
        for line in ck.models.sync(retained, stop_state.best_epoch,
                                   metrics_at=lambda e: history.epoch_metrics(client, run, e)):
            say(f"Checkpoint models: {line}")
        client.update_run(run_id, status="RUNNING")
        n = 1 + sum(k.startswith(RESUME_TAG) for k in run.data.tags)
        rolled_from = ran if ran > state.epoch else None
        tags = {f"{RESUME_TAG}{n}": resume_policy.record(changes, state.epoch, rolled_from)}
        if changes:
            tags[layout.TAG_RESUMED_PARAMS] = resume_policy.overlay(
                run.data.tags.get(layout.TAG_RESUMED_PARAMS), changes)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        for c in changes:
            say(f"Resume changes {c}")
        say(f"Resuming run {run_id} from {names.checkpoint_name(tconfig.model_name, state.epoch)} "
            f"(epoch {state.epoch}/{config.epochs})")
        if stopped:
            say(f"Run {run_id} had stopped early at epoch {state.epoch} ({stopped}); finishing it")
        tracked = TrackedTraining(RunContext(client, run_id, graph, config, tconfig, ck), progress)
        tracked.apply_retention(confirm=True)  # no more than the policies keep on either side after a crash
        return tracked, state, graph
    except BaseException:
        ck.close()  # the run folder holds its files alone again
        raise


def _hype_run(client: MlflowClient, run_id: str):
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "not found" in str(e).lower():
            raise TrackingError(f"no run with id {run_id!r} in this tracking store") from None
        raise
    if not made_by_hype(run):
        source = run.data.tags.get("mlflow.source.name") or "a plain MLflow run"
        entry = run.data.tags.get("mlflow.project.entryPoint")
        what = f"`mlflow run` entry point {entry!r}" if entry else source
        raise TrackingError(f"run {run_id} was not made by hype train ({what}: no {layout.TAG_MODEL_NAME} "
                            "tag, no model_name param); nothing of it was changed. Start a new run "
                            "without --resume")
    return run


def _open_checkpoints(client, run, run_id: str, tconfig: TrackerConfig, checkpoint_root: Path | None):
    found = resolve_folder(run, run_id, tconfig, checkpoint_root)
    local_dir = found.folder or (Path(checkpoint_root or tconfig.checkpoint_root) / run_id)
    make_folder(local_dir)
    tconfig = replace(tconfig, checkpoint_root=local_dir.parent)
    for p in remove_temporaries(local_dir, tconfig.model_name):
        say(f"Removed partial save left by the interrupted run: {p.name}")
    manifest = found.manifest or bind_folder(local_dir, client, run_id, tconfig)
    legacy = found.legacy and found.manifest is None
    ck = RunCheckpoints(run_id, tconfig.model_name, store=TrackedCheckpoints(run_id, client=client),
                        folder=local_dir, manifest=manifest, legacy_local=legacy,
                        models=CheckpointModels(client, run_id, run.info.experiment_id))
    return ck, tconfig


def _start_state(client, run, point: recover.ResumePoint, graph: Graph, config: TrainConfig,
                 from_epoch: int | None, checkpoint_root: Path) -> TrainState:
    run_id = run.info.run_id
    if point.state is not None:
        if point.lost:
            say(f"Resuming from epoch {point.state.epoch}: {len(point.lost)} newer checkpoint(s) do not "
                f"load from either copy and are lost; their epochs are trained again")
        return point.state
    if point.lost:
        what = f"epoch {from_epoch}'s" if from_epoch is not None else \
            f"{len(point.lost)} retained, none"
        raise TrackingError(f"run {run_id} has no loadable checkpoint to resume from: {what} loads "
                            f"(newest: {point.lost[0]})")
    if not _ever_retained(run):
        # Killed before its first checkpoint was stored: nothing was learnt that could be lost,
        # so the run starts again from epoch 0 with its own settings and seed.
        say(f"Run {run_id} stored no checkpoint before it stopped: starting it from epoch 0")
        from tracker.training import warm

        return warm.restart(client, run, graph, config, Path(checkpoint_root))
    raise TrackingError(f"run {run_id} has no retained checkpoint to resume from")


def _roll_back(ck: RunCheckpoints, inv: Inventory, epoch: int, from_epoch: int | None,
               values: dict) -> Inventory:
    """Delete (through the one deleter) the checkpoints after ``epoch``: asked for by --from-epoch,
    or newer ones that no longer load. A damaged local copy is set aside, never deleted."""
    why = (f"--from-epoch {epoch}" if from_epoch is not None
           else f"they do not load; going on from epoch {epoch}")
    decisions = roll_back(inv.records(), epoch, why)
    if not decisions:
        return inv
    say(f"Rolling back to epoch {epoch} ({why}): deleting the checkpoints of epochs "
        f"{', '.join(str(d.record.epoch) for d in decisions)}; the metrics logged for later epochs stay in "
        "the run's history and are logged again as training goes on")
    applied = ck.apply(Plan(inv, tuple(decisions)), confirm=True)
    if applied.error is not None or applied.failed:
        problem = applied.error or applied.failed[0].error
        raise TrackingError(f"could not roll back to epoch {epoch}: {problem}; resume again once the "
                            "store answers")
    held = inv.by_epoch()
    for d in decisions:
        moved = recover.set_aside(ck, held[d.record.epoch])
        if moved is not None:
            say(f"Set aside {d.record.name} as {moved.name}: it is not the checkpoint the run recorded")
    return ck.inventory(values=values)


def _best_weights(ck: RunCheckpoints, inv: Inventory, stop_state, point: recover.ResumePoint,
                  monitor: str):
    """The best epoch's embedding for the final model, or None (then the final model is the best
    epoch trained from here on, or the last); a best checkpoint lost on both sides is said."""
    best = stop_state.best_epoch
    held = inv.by_epoch()
    if best is None or best not in held or held[best].interrupted:
        return None
    if point.item is not None and best == point.item.epoch:
        return point.state.emb.detach().clone()
    try:
        recover.verify_tracked(ck, held[best])
        return recover.fetch(ck, held[best])["embeddings"]
    except CheckpointError as e:
        say(f"WARNING: the best checkpoint, epoch {best} ({monitor}={stop_state.best:.6g}), does not load "
            f"from either copy ({e}); its weights are lost: the final model will be the best epoch "
            "trained from here on, or the last")
        return None


RESUME_TAG = "hype.resume."  # hype.resume.1, .2, ...: what each resume changed (params are immutable)
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
TRACKER_FIELDS = {f.name for f in fields(TrackerConfig)}


def made_by_hype(run) -> bool:
    """A run that hype train started: it has the model tag and the params a resume needs."""
    p = run.data.params
    return (layout.TAG_MODEL_NAME in run.data.tags and "model_name" in p and "dataset_sha256" in p
            and "manifold" in p and "dim" in p)


def _ever_retained(run) -> bool:
    """Whether the run ever held a checkpoint: its retained-count tag was above 0 at some point
    (the tag is sent with the metrics of the epoch after a checkpoint is stored)."""
    return int(run.data.tags.get(layout.TAG_RETAINED, "0") or 0) > 0
