"""`python cli.py export`: an embedding (a checkpoint, or a run's final model) as a TSV file."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

_CHECKPOINT = click.Path(exists=True, dir_okay=False, path_type=Path)


def load_embedding(checkpoint: Path | None, run_id: str | None, tracking_uri: str | None):
    """(checkpoint dict, where it came from, the MLflow run or None) for CHECKPOINT or --run-id.

    A run's final model (hype_model/<model>.pth) is downloaded to a temporary folder and loaded
    there; every load uses weights_only=True, so a file holding pickled code is refused.
    Raises click.ClickException with a one-line message.
    """
    from tracker.checkpoints.files import CheckpointError, load

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    if (checkpoint is None) == (run_id is None):
        raise click.UsageError("give either CHECKPOINT or --run-id (not both)")
    if tracking_uri is not None and run_id is None:
        raise click.UsageError("--tracking-uri needs --run-id")
    try:
        if checkpoint is not None:
            return load(checkpoint), str(checkpoint), None
        run, client, name = _final_model_of(run_id, tracking_uri)
        with tempfile.TemporaryDirectory(prefix="hype-export-") as tmp:
            local = client.download_artifacts(run_id, name, tmp)
            return load(Path(local)), f"run {run_id}: {name}", run
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None


def _final_model_of(run_id: str, tracking_uri: str | None):
    from mlflow.exceptions import MlflowException

    from tracker import layout
    from tracker.policy.names import final_model_of
    from tracker.store.errors import TrackingError, TrackingUnavailable
    from tracker.store.open import READ_PROBE, resolve_and_open
    from tracker.store.redact import redact

    try:
        # train's checks; reading a run never creates a store
        uri, client = resolve_and_open(tracking_uri, create=False, probe=READ_PROBE)
        run = client.get_run(run_id)
        listed = [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER) if not a.is_dir]
    except (TrackingError, TrackingUnavailable) as e:
        raise click.ClickException(str(e)) from None
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise click.ClickException(f"no run with id {run_id!r} in {redact(uri)}") from None
        first = (e.message or e.error_code).strip().splitlines()[0]
        raise click.ClickException(f"run {run_id}: {redact(first)}") from None
    finals = [p for p in listed if final_model_of(p.rsplit("/", 1)[-1])]
    wanted = run.data.tags.get(layout.TAG_MODEL_NAME)
    mine = [p for p in finals if final_model_of(p.rsplit("/", 1)[-1]) == wanted]
    if len(mine) == 1 or len(finals) == 1:
        return run, client, (mine or finals)[0]
    if not finals:
        raise click.ClickException(
            f"run {run_id} has no final model in {layout.FINAL_FOLDER}/ (status {run.info.status}); "
            f"give one of its checkpoints ({layout.CHECKPOINT_FOLDER}/) as CHECKPOINT instead")
    raise click.ClickException(f"run {run_id} has several final models ({', '.join(finals)}); "
                               "download one and export it as CHECKPOINT")


def _rows(ckpt: dict, ball: bool):
    import torch

    from hype import manifolds

    manifold = ckpt.get("config", {}).get("manifold", "poincare")
    emb = ckpt["embeddings"].detach().to(torch.float64)  # (N, D); Lorentz: (N, dim + 1)
    if ball:
        if manifold != "lorentz":
            raise click.BadParameter(f"the embedding is {manifold}, already in the ball", param_hint="--ball")
        emb = manifolds.to_ball(manifold, emb)  # (N, dim)
    for name, row in zip(ckpt["names"], emb.tolist(), strict=True):
        name = str(name)
        if "\t" in name or "\n" in name or "\r" in name:
            raise click.ClickException(f"node name {name!r} contains a tab or newline: cannot write TSV")
        # repr: the shortest text that reads back as the same float64
        yield name + "\t" + "\t".join(repr(x) for x in row) + "\n"


@click.command(short_help="Write a checkpoint or a run's final model as TSV.")
@click.argument("checkpoint", type=_CHECKPOINT, required=False)
@click.option("--run-id", default=None, help="Export this run's final model (hype_model/<model>.pth).")
@click.option("--tracking-uri", default=None,
              help="With --run-id [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TSV to write ('-' for stdout): one line per node, name TAB coordinates.")
@click.option("--ball", is_flag=True,
              help="Lorentz embeddings: write Poincaré-ball coordinates instead of hyperboloid points.")
def export(checkpoint, run_id, tracking_uri, output, ball):
    """Write an embedding as TSV: a CHECKPOINT file (an epoch checkpoint or a final model) or,
    with --run-id, a tracked run's final model.

    Each line is a node name, a tab, and its coordinates separated by tabs, in the checkpoint's
    node order. Lorentz points are written as stored (dim + 1 coordinates) unless --ball.
    """
    ckpt, source, _ = load_embedding(checkpoint, run_id, tracking_uri)
    rows = _rows(ckpt, ball)
    if str(output) == "-":
        sys.stdout.writelines(rows)
        return
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # a reader never sees half a file
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(rows)
        os.replace(tmp, output)
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    n, d = ckpt["embeddings"].shape
    click.echo(f"{output}: {n:,} nodes x {d - (1 if ball else 0)} coordinates from {source}", err=True)
