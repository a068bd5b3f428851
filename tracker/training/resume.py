"""Resume a tracked run from its newest retained checkpoint, in its own verified folder.

The folder comes from --checkpoint-dir, else the run's tag (a hint, verified by the folder's
manifest), else ``checkpoints/<run_id>``. Reconcile is the lifecycle's inventory: a checkpoint
the manifest holds as written but the store lacks is uploaded (after its hash and a load are
checked); anything the manifest does not name is not ours and is left alone.
"""

from __future__ import annotations

import tempfile
from dataclasses import fields, replace
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph, load_edge_csv
from hype.train import TrainState, check_compatible, new_state
from tracker import layout
from tracker.checkpoints import folder as run_folder
from tracker.checkpoints.files import CheckpointError, load, remove_temporaries, sha256_of
from tracker.checkpoints.inventory import Inventory, Item, build, scan_local
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.checkpoints.manifest import Entry
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy import names, stopping
from tracker.policy import resume as resume_policy
from tracker.policy.retention import monitored_values
from tracker.store.errors import TrackingError
from tracker.training.callbacks import Progress, RunContext, TrackedTraining, say
from tracker.training.config import TrackerConfig
from tracker.training.start import bind_folder, make_folder


def _run_configs(run):
    from hype.config import TrainConfig

    return TrainConfig.from_dict(run.data.params), TrackerConfig.from_params(run.data.params, run.data.tags)


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


def _adopt_legacy(ck: RunCheckpoints, tracked: dict) -> None:
    """Bind a folder from before manifests: by the old name rules (the folder is named after the
    run), record the files the store proves are the run's (same name and size) as stored, and
    local-only ones that load, and say they are this run's, as written."""
    local, _ = scan_local(ck.folder)
    legacy = build(ck.model, manifest=None, local=local, tracked=tracked, legacy_local=True)
    for item in legacy.items:
        if not item.local:
            continue
        path = ck.folder / item.name
        try:
            _checked(load(path), ck.run_id, path)
        except CheckpointError as e:
            say(f"WARNING: {item.name} is not adopted as this run's: {e}")
            continue
        state = "stored" if item.stored else "written"
        ck.manifest.record(Entry(item.epoch, item.name, path.stat().st_size, sha256_of(path), state,
                                 item.value))
    ck.legacy_local = False


def reconcile(ck: RunCheckpoints, values: dict, policies: list) -> Inventory:
    """Upload what was written but never confirmed stored, and give a checkpoint the policies
    keep its tracked copy back if someone deleted it from the store; return the inventory after."""
    inv = ck.inventory(values=values)
    kept = {d.record.epoch for d in ck.plan(policies, inventory=inv).kept}
    for item in inv.items:
        restore = item.lost_tracked and item.epoch in kept
        if not (restore or not item.stored) or not item.local or item.interrupted:
            continue
        path = ck.folder / item.name
        try:
            if item.sha256 is not None and sha256_of(path) != item.sha256:
                raise CheckpointError(f"{path}: its sha256 differs from the manifest's")
            _checked(load(path), ck.run_id, path)
        except CheckpointError as e:
            say(f"WARNING: {item.name} is not in the store and is not usable; leaving it: {e}")
            continue
        ck.store.upload(path)
        ck.manifest.set_state(item.epoch, "stored")
        say(f"Stored {item.name} again: deleted from the store since, and still kept by the policies"
            if restore else f"Stored {item.name}, whose upload the interrupted run had not confirmed")
    return ck.inventory(values=values)


def fetch(ck: RunCheckpoints, item: Item) -> dict:
    """Load one retained checkpoint: the local copy when it is the manifest's, else the store's.
    A local file that is not ours is never overwritten; the store's copy is read beside it."""
    path = ck.folder / item.name
    if item.local:
        try:
            if item.sha256 is not None and sha256_of(path) != item.sha256:
                raise CheckpointError(f"{path}: not ours (its sha256 differs from the manifest's)")
            return _checked(load(path), ck.run_id, path)
        except CheckpointError as e:
            say(f"WARNING: {e}; trying the tracking store's copy")
    elif path.exists() or path.is_symlink():
        say(f"WARNING: {path}: not ours (not the file the run's manifest recorded); kept, "
            "reading the tracking store's copy")
    if not item.tracked:
        raise CheckpointError(f"{path}: no usable copy (the store does not hold it)")
    with tempfile.TemporaryDirectory(dir=ck.folder, prefix=".fetch-") as tmp:
        got = ck.store.download(item.name, tmp)
        try:
            ckpt = _checked(load(got), ck.run_id, path)
        except CheckpointError as e:
            why = str(e).split(": ", 1)[-1]
            raise CheckpointError(f"{path}: the local copy is not usable and the tracking store's "
                                  f"copy does not load either ({why})") from None
        if not path.exists() and not path.is_symlink():  # only a missing copy is restored
            got.replace(path)
            say(f"Downloaded {item.name} from the tracking store (no local copy)")
    return ckpt


def _checked(ckpt: dict, run_id: str, path: Path) -> dict:
    owner = ckpt.get("run_id")
    if owner is not None and owner != run_id:
        raise CheckpointError(f"{path}: not ours (the file says it belongs to run {owner})")
    return ckpt


def resume_run(client: MlflowClient, run_id: str, *, dataset: str | None = None,
               epochs: int | None = None, checkpoint_root: Path | None = None,
               force: bool = False, disk_margin: int | None = None, given: dict | None = None,
               ) -> tuple[TrackedTraining, TrainState, Graph]:
    """given: the options the command line named (click's names), checked by policy.resume."""
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
    config, tconfig = _run_configs(run)
    tconfig = replace(tconfig, force=force,
                      disk_margin=tconfig.disk_margin if disk_margin is None else disk_margin)
    given = dict(given or {})
    if epochs is not None:
        given["epochs"] = epochs
    epochs = given.get("epochs")
    changes, refused = resume_policy.plan(
        given, run.data.params, experiment=client.get_experiment(run.info.experiment_id).name,
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
    ran = _epochs_ran(client, run_id)
    # Closed by hype's finish (its last tags, then the status): log_pyfunc's own end_run also
    # says FINISHED, and a kill right after it leaves a run that still needs finishing.
    continuing = run.info.status == "FINISHED" and layout.TAG_FINAL_EPOCH in run.data.tags
    if continuing and (epochs is None or epochs <= ran):
        why = run.data.tags.get(layout.TAG_STOP_REASON, "finished")
        raise TrackingError(f"run {run_id} is FINISHED ({why}) after {ran} epochs; nothing was changed. "
                            f"To continue it, pass --epochs N with N > {ran}")
    if epochs is not None and epochs <= ran:
        raise TrackingError(f"--epochs {epochs}: run {run_id} has already trained {ran} epochs; "
                            f"give more than {ran} (or leave --epochs out to finish its {config.epochs})")
    if epochs is not None:
        config = replace(config, epochs=epochs)
    path = dataset or run.data.params.get("dataset_path")
    graph = load_edge_csv(path)
    if graph.sha256 != run.data.params.get("dataset_sha256", graph.sha256):
        raise TrackingError(f"{path} has changed since run {run_id} started (sha256 differs); "
                            "resume needs the same data")
    found = resolve_folder(run, run_id, tconfig, checkpoint_root)
    local_dir = found.folder or (Path(checkpoint_root or tconfig.checkpoint_root) / run_id)
    make_folder(local_dir)
    tconfig = replace(tconfig, checkpoint_root=local_dir.parent)
    for p in remove_temporaries(local_dir, tconfig.model_name):
        say(f"Removed partial save left by the interrupted run: {p.name}")
    store = TrackedCheckpoints(run_id, client=client)
    manifest = found.manifest or bind_folder(local_dir, client, run_id, tconfig)
    ck = RunCheckpoints(run_id, tconfig.model_name, store=store, folder=local_dir, manifest=manifest,
                        legacy_local=found.legacy and found.manifest is None)
    try:
        if ck.legacy_local:
            _adopt_legacy(ck, store.list())
        stop_cfg = tconfig.stop_config(config.burnin)
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, tconfig.monitor)]
        values = monitored_values(history, start=stop_cfg.burnin)
        inv = reconcile(ck, values, tconfig.policies(values))
        state, unreadable = None, []
        candidates = [i for i in inv.items if not i.interrupted]
        for item in reversed(candidates):  # newest first; skip any that does not load
            try:
                state = TrainState.from_checkpoint(fetch(ck, item))
                break
            except CheckpointError as e:
                say(f"WARNING: skipping {item.name}: {e}")
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
        stop_state = stopping.replay(history, stop_cfg, upto=state.epoch)
        if continuing:
            # Asked to go on past its stop: keep its best, give patience back, and say so.
            stop_state = replace(stop_state, bad_evals=0)
            say(f"Continuing FINISHED run {run_id} past its stop "
                f"({run.data.tags.get(layout.TAG_STOP_REASON, 'finished')}) up to epoch {config.epochs}")
        progress = Progress(stop_state, {e: v for e, v in values.items() if e <= state.epoch},
                            inv.records(), resumed_from=state.epoch or None)
        best = stop_state.best_epoch
        held = inv.by_epoch()
        if best is not None and best in held and not held[best].interrupted:
            progress.best_emb = fetch(ck, held[best])["embeddings"]
        client.update_run(run_id, status="RUNNING")
        n = 1 + sum(k.startswith(RESUME_TAG) for k in run.data.tags)
        client.set_tag(run_id, f"{RESUME_TAG}{n}", resume_policy.record(changes, state.epoch))
        for c in changes:
            say(f"Resume changes {c}")
        say(f"Resuming run {run_id} from {names.checkpoint_name(tconfig.model_name, state.epoch)} "
            f"(epoch {state.epoch}/{config.epochs})")
        tracked = TrackedTraining(RunContext(client, run_id, graph, config, tconfig, ck), progress)
        tracked.apply_retention(confirm=True)  # no more than the policies keep on either side after a crash
        return tracked, state, graph
    except BaseException:
        ck.close()  # the run folder holds its files alone again
        raise


RESUME_TAG = "hype.resume."  # hype.resume.1, .2, ...: what each resume changed (params are immutable)
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
TRACKER_FIELDS = {f.name for f in fields(TrackerConfig)}


def _epochs_ran(client: MlflowClient, run_id: str) -> int:
    """The newest epoch the run logged (its loss is logged every epoch)."""
    return max((int(m.step) for m in client.get_metric_history(run_id, "loss")), default=0)


def made_by_hype(run) -> bool:
    """A run that hype train started: it has the model tag and the params a resume needs."""
    p = run.data.params
    return (layout.TAG_MODEL_NAME in run.data.tags and "model_name" in p and "dataset_sha256" in p
            and "manifold" in p and "dim" in p)


def _ever_retained(run) -> bool:
    """Whether the run ever held a checkpoint: its retained-count tag was above 0 at some point
    (the tag is sent with the metrics of the epoch after a checkpoint is stored)."""
    return int(run.data.tags.get(layout.TAG_RETAINED, "0") or 0) > 0
