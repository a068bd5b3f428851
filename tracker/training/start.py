"""Start a tracked run: create (or adopt `mlflow run`'s) MLflow run, bind its checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import Graph
from hype.train import TrainState, new_state
from tracker import layout
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.checkpoints.manifest import Binding, Manifest
from tracker.checkpoints.models import CheckpointModels
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.store.errors import TrackingError
from tracker.store.open import get_or_create_experiment
from tracker.store.redact import redact
from tracker.training.callbacks import Progress, RunContext, TrackedTraining
from tracker.training.config import TrackerConfig


def dataset_params(graph: Graph) -> dict:
    return {"dataset_path": str(Path(graph.path).resolve()), "dataset_sha256": graph.sha256,
            "dataset_nodes": graph.num_nodes, "dataset_edges": graph.num_edges}


def make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only mount, ...
        raise TrackingError(f"cannot use checkpoint folder {path}: {e.strerror or e}") from None


def bind_folder(folder: Path, client: MlflowClient, run_id: str, tconfig: TrackerConfig) -> Manifest:
    """Create (or open, for this run only) the manifest that makes ``folder`` run_id's."""
    uri = client.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"  # the manifest outlives the cwd
    return Manifest.create(folder, Binding(run_id, uri, tconfig.model_name, tconfig.monitor,
                                           tconfig.resolved_mode))


def adoptable_problem(run) -> str | None:
    """Why a run that MLFLOW_RUN_ID names is not one `mlflow run` just created for us, or None:
    it must be RUNNING and hold nothing of a hype training yet (a leftover variable must not
    make a new training write into an old run)."""
    status = run.info.status
    if status != "RUNNING":
        return f"a {status} run"
    if layout.TAG_MODEL_NAME in run.data.tags or "model_name" in run.data.params:
        return f"hype run {run.info.run_id} (model {run.data.tags.get(layout.TAG_MODEL_NAME, '?')}), " \
               "which already trained"
    if run.data.metrics:  # `mlflow run` logs none: this is someone's run in progress
        shown = ", ".join(sorted(run.data.metrics)[:3])
        return f"a RUNNING run that already logged metrics ({shown}), not one `mlflow run` just made"
    return None


def adopted_run(client: MlflowClient, uri: str, run_id: str, *, into: str, missing: str, other: str):
    """The run MLFLOW_RUN_ID names, when it is one that `mlflow run` just created; else one line
    (TrackingError) that says what it is and, as ``missing``/``other``, what to do."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise TrackingError(f"MLFLOW_RUN_ID={run_id} is not a run in {redact(uri)}; {missing}") from None
    problem = adoptable_problem(run)
    if problem:
        raise TrackingError(f"MLFLOW_RUN_ID={run_id} names {problem}; only a run that `mlflow run` "
                            f"just created is {into}. {other}")
    return run


def start_run(client: MlflowClient, uri: str, graph: Graph, config: TrainConfig, tconfig: TrackerConfig,
              *, experiment: str, run_name: str | None) -> tuple[TrackedTraining, TrainState]:
    from mlflow.environment_variables import MLFLOW_RUN_ID

    tags = {layout.TAG_MODEL_NAME: tconfig.model_name, layout.TAG_MONITOR: tconfig.monitor}
    make_folder(Path(tconfig.checkpoint_root))  # before the run exists: no orphan RUNNING run
    if MLFLOW_RUN_ID.get():  # `mlflow run` created the run (and logged its -P params): use it
        run = adopted_run(client, uri, MLFLOW_RUN_ID.get(), into="trained into",
                          missing="unset it to start a new run",
                          other="Unset MLFLOW_RUN_ID to start a new run (or --resume a hype run)")
        get_or_create_experiment(client, uri, client.get_experiment(run.info.experiment_id).name)
        for k, v in tags.items():
            client.set_tag(run.info.run_id, k, v)
    else:
        exp_id = get_or_create_experiment(client, uri, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    local_dir = Path(tconfig.checkpoint_root) / run_id
    make_folder(local_dir)
    manifest = bind_folder(local_dir, client, run_id, tconfig)
    client.set_tag(run_id, layout.TAG_CHECKPOINT_DIR, str(local_dir.resolve()))  # a hint, verified on use
    params = {**config.to_dict(), **tconfig.params(), **dataset_params(graph)}
    # A param is logged once: `mlflow run` already logged the -P values under the same names.
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in run.data.params])
    checkpoints = RunCheckpoints(run_id, tconfig.model_name, store=TrackedCheckpoints(run_id, client=client),
                                 folder=local_dir, manifest=manifest,
                                 models=CheckpointModels(client, run_id, run.info.experiment_id, _known={}))
    ctx = RunContext(client, run_id, graph, config, tconfig, checkpoints)
    return TrackedTraining(ctx, Progress()), new_state(graph, config)
