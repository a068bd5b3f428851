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
    model (or --epoch E's checkpoint)."""
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
    if as_json:
        click.echo(json.dumps({"source": source, "dataset": str(dataset), "manifold": manifold,
                               "epoch": epoch, "mean_rank": r.mean_rank, "map": r.map,
                               "nodes": r.nodes, "edges": r.edges}))
        return
    click.echo(f"{source} (epoch {epoch}, {manifold}) on {dataset}:")
    click.echo(f"mean rank {r.mean_rank:.3f}, MAP {r.map:.4f} ({r.nodes:,} nodes, {r.edges:,} edges)")
