"""`python cli.py evaluate`: reconstruction mean rank and MAP of a checkpoint or a run's final model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from commands.export import load_embedding


def _aligned(ckpt: dict, graph):
    """The embedding's rows in the dataset's node order: (N_graph, D)."""
    import torch

    index = {str(n): i for i, n in enumerate(ckpt["names"])}
    missing = [n for n in graph.names if n not in index]
    if missing:
        eg = ", ".join(repr(n) for n in missing[:3])
        raise click.ClickException(
            f"{len(missing):,} of the dataset's {graph.num_nodes:,} nodes are not in the embedding "
            f"(e.g. {eg}); evaluate it on the dataset it was trained on (--dataset)")
    rows = torch.tensor([index[n] for n in graph.names], dtype=torch.long)
    return ckpt["embeddings"].detach()[rows]


@click.command(short_help="Mean rank and MAP of a checkpoint or a run's final model.")
@click.argument("checkpoint", required=False)
@click.option("--run-id", default=None, help="Evaluate this run's final model (hype_model/<model>.pth).")
@click.option("--epoch", type=int, default=None, help="With --run-id: this retained epoch's checkpoint.")
@click.option("--tracking-uri", default=None,
              help="With --run-id [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Edge list CSV (id1,id2,weight) [default: the run's dataset with --run-id, "
                   "else data/mammal_closure.csv].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(checkpoint, run_id, epoch, tracking_uri, dataset, as_json):
    """Reconstruction mean rank and MAP (exact, over every node with neighbours) of a
    CHECKPOINT (a file, or a models:/ or runs:/ URI) or, with --run-id, of a tracked run's final
    model (or --epoch E's checkpoint).

    Under `mlflow run` (MLFLOW_RUN_ID set) the result is also logged as the metrics mean_rank
    and map of its run, in the evaluated run's experiment (hype for a file)."""
    from tracker.store import project_run

    project = _project_run()
    with project_run.recording(project):
        _evaluate(project, checkpoint, run_id, epoch, tracking_uri, dataset, as_json)


def _project_run():
    """`mlflow run`'s run (None outside one), or a one-line error."""
    from tracker.store import project_run
    from tracker.store.errors import TrackingError, TrackingUnavailable

    try:
        return project_run.attach()
    except (TrackingError, TrackingUnavailable) as e:
        raise click.ClickException(str(e)) from None


def _evaluate(project, checkpoint, run_id, epoch, tracking_uri, dataset, as_json):
    from commands.train import DEFAULT_DATASET
    from hype.data import DataError, load_edge_csv
    from hype.evaluate import reconstruction

    ckpt, source, run = load_embedding(checkpoint, run_id, tracking_uri, epoch)
    if dataset is None:
        recorded = run.data.params.get("dataset_path") if run is not None else None
        dataset = Path(recorded) if recorded and Path(recorded).is_file() else DEFAULT_DATASET
    try:
        graph = load_edge_csv(dataset)
    except DataError as e:
        raise click.ClickException(str(e).splitlines()[0]) from None
    manifold = ckpt.get("config", {}).get("manifold", "poincare")
    try:
        r = reconstruction(_aligned(ckpt, graph), graph, manifold)
    except ValueError as e:
        raise click.ClickException(f"{dataset}: {e}") from None
    epoch = ckpt.get("epoch")
    if project is not None:
        _record(project, run, tracking_uri, source, graph, manifold, epoch, r)
    if as_json:
        click.echo(json.dumps({"source": source, "dataset": str(dataset), "manifold": manifold,
                               "epoch": epoch, "mean_rank": r.mean_rank, "map": r.map,
                               "nodes": r.nodes, "edges": r.edges}))
        return
    click.echo(f"{source} (epoch {epoch}, {manifold}) on {dataset}:")
    click.echo(f"mean rank {r.mean_rank:.3f}, MAP {r.map:.4f} ({r.nodes:,} nodes, {r.edges:,} edges)")


def _record(project, run, tracking_uri, source, graph, manifold, epoch, r) -> None:
    """The result as metrics of `mlflow run`'s run, placed beside the run it evaluated."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tracker.layout import TAG_NOTE
    from tracker.store.errors import TrackingError
    from tracker.store.project_run import DEFAULT_EXPERIMENT
    from tracker.store.redact import one_line
    from tracker.store.uri import resolve_tracking_uri
    from tracker.training.start import dataset_params

    experiment = DEFAULT_EXPERIMENT
    try:
        if run is not None:  # in the store it was read from (--tracking-uri, else mlflow run's)
            client = project.client if tracking_uri is None else MlflowClient(
                resolve_tracking_uri(tracking_uri))
            experiment = client.get_experiment(run.info.experiment_id).name
        project.place(experiment)
        project.record(
            "evaluate", metrics={"mean_rank": r.mean_rank, "map": r.map},
            params={"checkpoint": source, "checkpoint_run_id": run.info.run_id if run else "",
                    "checkpoint_epoch": epoch, "manifold": manifold, **dataset_params(graph)},
            tags={TAG_NOTE: f"Evaluated {source} (epoch {epoch}) on {graph.path}: mean rank "
                            f"{r.mean_rank:.3f}, MAP {r.map:.4f}"})
    except MlflowException as e:
        raise click.ClickException(f"cannot record into `mlflow run`'s run: {one_line(e)}") from None
    except TrackingError as e:
        raise click.ClickException(str(e)) from None
