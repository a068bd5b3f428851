"""`python cli.py export`: an embedding (a checkpoint, or a run's final model) as a TSV file."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click


def load_embedding(checkpoint: str | None, run_id: str | None, tracking_uri: str | None,
                   epoch: int | None = None):
    """(checkpoint dict, where it came from, the MLflow run or None) for CHECKPOINT (a file, or a
    models:/ or runs:/ URI) or --run-id [--epoch].

    A stored file is downloaded to a temporary folder and loaded there; every load uses
    weights_only=True, so a file holding pickled code is refused.
    Raises click.ClickException with a one-line message.
    """
    from tracker.checkpoints.files import CheckpointError, load

    if (checkpoint is None) == (run_id is None):
        raise click.UsageError("give either CHECKPOINT or --run-id (not both)")
    if epoch is not None and run_id is None:
        raise click.UsageError("--epoch needs --run-id")
    uri = checkpoint if checkpoint and checkpoint.startswith(URI_SCHEMES) else None
    if tracking_uri is not None and run_id is None and uri is None:
        raise click.UsageError("--tracking-uri needs --run-id or a checkpoint URI")
    try:
        if checkpoint is not None and uri is None:
            path = Path(checkpoint)
            if not path.exists():
                raise click.BadParameter(f"Path {checkpoint!r} does not exist.", param_hint="'CHECKPOINT'")
            if path.is_dir():
                raise click.BadParameter(f"Path {checkpoint!r} is a directory.", param_hint="'CHECKPOINT'")
            return load(path), str(path), None
        with tempfile.TemporaryDirectory(prefix="hype-export-") as tmp:
            local, source, run = fetch_checkpoint(uri, run_id, epoch, tracking_uri, Path(tmp))
            return load(local), source, run
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None


URI_SCHEMES = ("models:/", "runs:/")


def fetch_checkpoint(uri: str | None, run_id: str | None, epoch: int | None, tracking_uri: str | None,
                     dst: Path):
    """(local path, where it came from, the run) of a stored checkpoint or final model, downloaded
    into ``dst``: by URI, or a run's epoch (or, without one, its final model)."""
    from mlflow.exceptions import MlflowException

    from tracker.checkpoints.source import SourceError, resolve
    from tracker.store.errors import TrackingError, TrackingUnavailable
    from tracker.store.open import READ_PROBE, resolve_and_open
    from tracker.store.redact import redact

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one file
    try:
        # train's checks; reading a run never creates a store
        _, client = resolve_and_open(tracking_uri, create=False, probe=READ_PROBE)
        stored = resolve(client, uri=uri, run_id=run_id, epoch=epoch)
        local = client.download_artifacts(stored.run_id, stored.path, str(dst))
        return Path(local), stored.what, stored.run
    except (TrackingError, TrackingUnavailable, SourceError) as e:
        raise click.ClickException(str(e)) from None
    except MlflowException as e:
        first = (e.message or e.error_code).strip().splitlines()[0]
        raise click.ClickException(redact(first)) from None


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
@click.argument("checkpoint", required=False)
@click.option("--run-id", default=None, help="Export this run's final model (hype_model/<model>.pth).")
@click.option("--epoch", type=int, default=None, help="With --run-id: this retained epoch's checkpoint.")
@click.option("--tracking-uri", default=None,
              help="With --run-id [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TSV to write ('-' for stdout): one line per node, name TAB coordinates.")
@click.option("--ball", is_flag=True,
              help="Lorentz embeddings: write Poincaré-ball coordinates instead of hyperboloid points.")
def export(checkpoint, run_id, epoch, tracking_uri, output, ball):
    """Write an embedding as TSV: a CHECKPOINT (a file, or a models:/ or runs:/ URI from `cli.py
    checkpoints`) or, with --run-id, a tracked run's final model (or --epoch E's checkpoint).

    Each line is a node name, a tab, and its coordinates separated by tabs, in the checkpoint's
    node order. Lorentz points are written as stored (dim + 1 coordinates) unless --ball.
    """
    ckpt, source, _ = load_embedding(checkpoint, run_id, tracking_uri, epoch)
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
