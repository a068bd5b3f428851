"""Which stored file a model URI (or a run and an epoch) names, for evaluate, export and serve.

Accepted, each resolved to (run id, artifact path) in the run's own artifacts:
- ``models:/<model_id>``: a checkpoint's LoggedModel (its ``hype.artifact`` tag), or a run's
  final model (the run's ``hype_model/<model>.pth``);
- ``runs:/<run_id>/hype_checkpoints/<name>.pth`` or ``runs:/<run_id>/hype_model/<name>.pth``;
- ``--run-id R --epoch E``: run R's retained checkpoint of epoch E (without an epoch: the run's
  final model, as before).
Every path is checked against the run's listing first, so a deleted checkpoint is a one-line
error that lists the retained epochs, not a download failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.checkpoints.models import ARTIFACT_TAG
from tracker.policy.names import checkpoint_name, final_model_of, parse_checkpoint_name

_RUNS_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})/(?P<path>[^?#]+)")
_MODELS_URI = re.compile(r"models:/(?P<id>m-[0-9a-f]{32})/?")


class SourceError(ValueError):
    """One line: what was asked for and why it does not name a stored checkpoint."""


@dataclass(frozen=True)
class Stored:
    run: object  # the mlflow Run it belongs to (looked up once)
    path: str  # artifact path in the run, e.g. "hype_checkpoints/mammals_epoch0041.pth"

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def what(self) -> str:  # for messages: "run R: hype_checkpoints/mammals_epoch0041.pth"
        return f"run {self.run_id}: {self.path}"


def parse(uri: str) -> tuple[str, str]:
    """PURE: ("models", model_id) or ("runs", "<run>/<path>"); SourceError otherwise."""
    if m := _MODELS_URI.fullmatch(uri.strip()):
        return "models", m["id"]
    if m := _RUNS_URI.fullmatch(uri.strip()):
        return "runs", f"{m['run']}/{m['path'].strip('/')}"
    raise SourceError(f"{uri!r} is not a checkpoint URI: expected models:/<model_id> (see `python cli.py "
                      "checkpoints RUN_ID`) or runs:/<run_id>/hype_checkpoints/<name>.pth")


def resolve(client: MlflowClient, *, uri: str | None = None, run_id: str | None = None,
            epoch: int | None = None) -> Stored:
    if uri is not None:
        kind, value = parse(uri)
        if kind == "models":
            return _from_model(client, value)
        run_id, path = value.split("/", 1)
        return _checked(client, _run(client, run_id), path)
    run = _run(client, run_id)
    if epoch is None:
        return _final(client, run)
    model = run.data.tags.get(layout.TAG_MODEL_NAME) or run.data.params.get("model_name")
    if not model:
        raise SourceError(f"run {run_id} was not made by hype train: it has no checkpoints to choose from")
    return _checked(client, run, f"{layout.CHECKPOINT_FOLDER}/{checkpoint_name(model, epoch)}")


def _run(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise SourceError(f"no run with id {run_id!r} in this tracking store") from None
        raise


def _from_model(client: MlflowClient, model_id: str) -> Stored:
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        raise SourceError(f"no model {model_id!r} in this tracking store (deleted with its checkpoint by "
                          "retention, or never logged)") from None
    if str(model.status) != "READY":
        raise SourceError(f"model {model_id} ({model.name}) is {model.status}: its checkpoint is not stored")
    artifact = model.tags.get(ARTIFACT_TAG)
    if artifact:
        run_id, path = parse(artifact)[1].split("/", 1)
        return _checked(client, _run(client, run_id), path)
    if model.name == layout.PYFUNC_FOLDER and model.source_run_id:
        return _final(client, _run(client, model.source_run_id))
    raise SourceError(f"model {model_id} ({model.name}) is not one of hype's checkpoints or final models")


def _final(client: MlflowClient, run) -> Stored:
    run_id = run.info.run_id
    listed = [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER) if not a.is_dir]
    finals = [p for p in listed if final_model_of(p.rsplit("/", 1)[-1])]
    wanted = run.data.tags.get(layout.TAG_MODEL_NAME)
    mine = [p for p in finals if final_model_of(p.rsplit("/", 1)[-1]) == wanted]
    if len(mine) == 1 or len(finals) == 1:
        path = (mine or finals)[0]
        return Stored(run, path)
    if not finals:
        raise SourceError(f"run {run_id} has no final model in {layout.FINAL_FOLDER}/ (status "
                          f"{run.info.status}); choose one of its checkpoints with --epoch E")
    raise SourceError(f"run {run_id} has several final models ({', '.join(finals)}); choose one by URI: "
                      f"runs:/{run_id}/<path>")


def _checked(client: MlflowClient, run, path: str) -> Stored:
    folder, _, name = path.rpartition("/")
    run_id = run.info.run_id
    if folder not in (layout.CHECKPOINT_FOLDER, layout.FINAL_FOLDER) or not name.endswith(".pth"):
        raise SourceError(f"runs:/{run_id}/{path} is not a checkpoint: expected "
                          f"{layout.CHECKPOINT_FOLDER}/<name>.pth or {layout.FINAL_FOLDER}/<name>.pth")
    listed = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder) if not a.is_dir}
    if name not in listed:
        held = sorted(p.epoch for n in listed if (p := parse_checkpoint_name(n)))
        raise SourceError(f"run {run_id} holds no {path} (deleted by retention, or never saved); retained "
                          f"epochs: {', '.join(map(str, held)) or 'none'}")
    return Stored(run, path)
