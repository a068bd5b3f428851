"""The Poincaré disk of an embedding (first two coordinates), logged as a PNG artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from hype import manifolds
from hype.data import Graph
from tracker import layout

LABELS = 12  # how many nodes get a label: the ones with the most descendants (closest to the root)


def draw_disk(emb: torch.Tensor, graph: Graph, manifold: str, path: Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no screen on our machines
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    xy = manifolds.to_ball(manifold, emb.detach()).numpy()[:, :2]  # (N, 2)
    if manifold == "euclidean":
        xy = xy / max(np.abs(xy).max(), 1e-12) * 0.95  # a picture, not a geometry
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.4", lw=1))
    # edges of the transitive reduction would be nicer; a sample of closure edges shows structure
    rng = np.random.default_rng(0)
    shown = graph.edges[rng.choice(graph.num_edges, size=min(1500, graph.num_edges), replace=False)]
    # one artist for all edges: 1,500 ax.plot lines took ~1.5 s, most of a short run's plot
    ax.add_collection(LineCollection(xy[shown], colors="0.85", linewidths=0.3, zorder=1))  # (E, 2, 2)
    in_degree = np.bincount(graph.edges[:, 1], minlength=graph.num_nodes)
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c=np.log1p(in_degree), cmap="viridis", zorder=2)
    for i in np.argsort(-in_degree)[:LABELS]:
        ax.annotate(graph.names[i].split(".")[0], xy[i], fontsize=7, zorder=3)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def log_disk_plot(client, run_id: str, emb: torch.Tensor, graph: Graph, manifold: str, *,
                  epoch: int | None) -> None:
    name = "poincare_disk.png" if epoch is None else f"poincare_disk_epoch{epoch:04d}.png"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        title = f"{manifold} embedding, first two coordinates" + ("" if epoch is None else f", epoch {epoch}")
        draw_disk(emb, graph, manifold, path, title=title)
        client.log_artifact(run_id, str(path), layout.PLOT_FOLDER)
