"""Warm start: a new run begins from a retained checkpoint of another run, or from a file.

``--init-from RUN_ID[:EPOCH]`` (EPOCH: a retained one; without it the newest that loads) or
``--init-from PATH.pth``. The source is read before the new run exists, so any problem is one
line and no run. The source is only read: nothing of the other run, or its folder, is written.
Nodes are matched by name, so the new run may train on a grown or shrunk graph; nodes the
source lacks start where a fresh run would. The new run records where it came from as a param,
as tags, and in its description (a link the MLflow UI shows on the run page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hype import node_names
from hype.config import TrainConfig
from hype.data import Graph
from hype.train import TrainState, new_state
from tracker import layout
from tracker.checkpoints import folder as run_folder
from tracker.checkpoints.files import CheckpointError, load
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.store.errors import TrackingError
from tracker.training.callbacks import say

_RUN_SPEC = re.compile(r"(?P<run>[0-9a-f]{32})(?::(?P<epoch>\d+))?")


@dataclass(frozen=True)
class Source:
    spec: str  # as recorded: RUN_ID:EPOCH, or the file's absolute path
    uri: str  # runs:/RUN_ID/hype_checkpoints/NAME, or the file path
    embeddings: torch.Tensor  # (M, D) as stored
    names: list[str]  # (M,) node names
    run_id: str | None = None
    experiment_id: str | None = None
    run_name: str | None = None
    epoch: int | None = None


@dataclass(frozen=True)
class Spec:
    run_id: str | None = None
    epoch: int | None = None
    path: Path | None = None


def parse(text: str) -> Spec:
    """PURE: ``RUN_ID[:EPOCH]`` or a checkpoint path; ValueError (one line) otherwise."""
    m = _RUN_SPEC.fullmatch(text.strip())
    if m:
        return Spec(m["run"], int(m["epoch"]) if m["epoch"] is not None else None)
    if text.endswith(".pth") or "/" in text:
        return Spec(path=Path(text).expanduser())
    raise ValueError(f"--init-from {text!r}: expected RUN_ID[:EPOCH] (a 32-hex run id) or a checkpoint file")


def align(source: list[str], target: list[str]) -> tuple[list[int], list[int]]:
    """PURE: (target rows, source rows) of the nodes both have, in target order."""
    where = {n: i for i, n in enumerate(source)}
    pairs = [(t, where[n]) for t, n in enumerate(target) if n in where]
    return [t for t, _ in pairs], [s for _, s in pairs]


def load_source(client: MlflowClient, text: str, config: TrainConfig, checkpoint_root: Path) -> Source:
    try:
        spec = parse(text)
    except ValueError as e:
        raise TrackingError(str(e)) from None
    if spec.path is not None:
        try:
            ckpt = load(spec.path)
        except CheckpointError as e:
            raise TrackingError(f"--init-from: {e}") from None
        source = Source(str(spec.path.resolve()), str(spec.path.resolve()), *_weights(ckpt, text))
        _check_geometry(ckpt.get("config") or {}, config, "the checkpoint")
        return source
    try:
        run = client.get_run(spec.run_id)
    except MlflowException:
        raise TrackingError(f"--init-from: no run with id {spec.run_id!r} in this tracking store") from None
    model = run.data.tags.get(layout.TAG_MODEL_NAME) or run.data.params.get("model_name")
    if not model:
        raise TrackingError(f"--init-from: run {spec.run_id} was not made by hype train")
    _check_geometry(run.data.params, config, f"run {spec.run_id}")
    ckpt, item = _read_checkpoint(client, run, model, spec, checkpoint_root)
    uri = f"runs:/{spec.run_id}/{layout.CHECKPOINT_FOLDER}/{item.name}"
    return Source(f"{spec.run_id}:{item.epoch}", uri, *_weights(ckpt, text), spec.run_id,
                  run.info.experiment_id, run.info.run_name, item.epoch)


def _read_checkpoint(client, run, model: str, spec: Spec, checkpoint_root: Path):
    found = run_folder.locate(spec.run_id, hint=run.data.tags.get(layout.TAG_CHECKPOINT_DIR),
                              root=checkpoint_root)
    ck = RunCheckpoints(spec.run_id, model, store=TrackedCheckpoints(spec.run_id, client=client),
                        folder=found.folder, manifest=found.manifest, legacy_local=found.legacy)
    from tracker.training.recover import fetch

    try:
        retained = [i for i in ck.inventory().items if not i.interrupted]
        items = retained
        if spec.epoch is not None:
            items = [i for i in retained if i.epoch == spec.epoch]
            if not items:
                held = ", ".join(str(i.epoch) for i in retained) or "none"
                raise TrackingError(f"--init-from: run {spec.run_id} holds no checkpoint of epoch "
                                    f"{spec.epoch} (retained epochs: {held})")
        problems = []
        for item in reversed(items):
            try:
                return fetch(ck, item, restore=False), item
            except CheckpointError as e:
                problems.append(str(e))
        raise TrackingError(f"--init-from: run {spec.run_id} has no loadable retained checkpoint"
                            + (f" ({problems[0]})" if problems else ""))
    finally:
        ck.close()


def _weights(ckpt: dict, text: str) -> tuple[torch.Tensor, list[str]]:
    if not isinstance(ckpt.get("embeddings"), torch.Tensor) or "names" not in ckpt:
        raise TrackingError(f"--init-from {text}: not a hype checkpoint (no embeddings and names)")
    return ckpt["embeddings"].to(torch.float64), node_names.decode(ckpt["names"])


def _check_geometry(got: dict, config: TrainConfig, what: str) -> None:
    """got: the source's config (a checkpoint's dict, or a run's params, as text)."""
    for key in ("manifold", "dim"):
        if str(got.get(key)) != str(getattr(config, key)):
            raise TrackingError(f"--init-from: {what} has {key}={got.get(key)}, this run asks for "
                                f"{key}={getattr(config, key)}; a warm start needs the same geometry")


def initial_state(source: Source, graph: Graph, config: TrainConfig) -> tuple[TrainState, int]:
    """A fresh state whose rows of the nodes the source has are the source's; (state, matched)."""
    state = new_state(graph, config)
    rows, src = align(source.names, state.names)
    if not rows:
        raise TrackingError(f"--init-from {source.spec}: no node of this dataset is in the checkpoint")
    if source.embeddings.shape[1] != state.emb.shape[1]:
        raise TrackingError(f"--init-from {source.spec}: embedding width {source.embeddings.shape[1]}, "
                            f"this run needs {state.emb.shape[1]}")
    state.emb[rows] = source.embeddings[src]
    return state, len(rows)


def record(client: MlflowClient, run_id: str, source: Source, matched: int, total: int) -> None:
    """Param, tags and the run's description (markdown the UI renders, with a link to the source)."""
    if source.run_id:
        link = (f"[run {source.run_name or source.run_id}, epoch {source.epoch}]"
                f"(#/experiments/{source.experiment_id}/runs/{source.run_id}?{layout.UI_WORKFLOW})")
    else:
        link = f"`{source.uri}`"
    note = f"Warm-started from {link}: {matched} of {total} nodes from `{source.uri}`."
    tags = {layout.TAG_INIT_FROM: source.spec, layout.TAG_NOTE: note}
    if source.run_id:
        tags[layout.TAG_INIT_FROM_RUN] = source.run_id
    client.log_batch(run_id, params=[Param("init_from", source.uri)],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    say(f"Warm start from {source.uri}: {matched} of {total} nodes"
        + (f" ({total - matched} new ones start at random)" if matched < total else ""))


def restart(client: MlflowClient, run, graph: Graph, config: TrainConfig,
            checkpoint_root: Path) -> TrainState:
    """Epoch 0 of ``run`` again: its warm start again when it had one, else a fresh state."""
    spec = run.data.tags.get(layout.TAG_INIT_FROM)
    if not spec:
        return new_state(graph, config)
    return initial_state(load_source(client, spec, config, checkpoint_root), graph, config)[0]
