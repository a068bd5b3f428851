"""Reconstruction metrics against a brute-force implementation of the definition."""

import numpy as np
import pytest
import torch

from hype import manifolds
from hype.data import from_edges
from hype.evaluate import reconstruction, sample_nodes


def brute_force(emb, graph, manifold):
    dist = manifolds.get(manifold).distance
    n = graph.num_nodes
    ranks, aps = [], []
    for u in range(n):
        nbrs = set(graph.indices[graph.indptr[u]:graph.indptr[u + 1]].tolist())
        if not nbrs:
            continue
        d = dist(emb[u].expand(n, -1), emb).tolist()
        others = [w for w in range(n) if w != u and w not in nbrs]
        node_ranks = []
        for v in nbrs:
            node_ranks.append(1 + sum(d[w] < d[v] for w in others))
        ranks += node_ranks
        # average precision: the i-th closest neighbour sits at position i + closer non-neighbours
        ordered = sorted(nbrs, key=lambda v: d[v])
        aps.append(np.mean([(i + 1) / (i + 1 + sum(d[w] < d[v] for w in others))
                            for i, v in enumerate(ordered)]))
    return np.mean(ranks), np.mean(aps)


def random_graph(n, m, seed):
    rng = np.random.default_rng(seed)
    edges = rng.integers(0, n, size=(m, 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    return from_edges([f"n{i}" for i in range(n)], edges)


@pytest.mark.parametrize("manifold", ["poincare", "lorentz", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force(manifold, seed):
    graph = random_graph(40, 160, seed)
    emb = manifolds.get(manifold).init(40, 3, scale=0.5, generator=torch.Generator().manual_seed(seed))
    got = reconstruction(emb, graph, manifold, chunk=7)  # several chunks
    mr, mean_ap = brute_force(emb, graph, manifold)
    assert got.mean_rank == pytest.approx(mr, rel=1e-12)
    assert got.map == pytest.approx(mean_ap, rel=1e-12)
    assert got.edges == graph.num_edges


def test_subset_matches_brute_force_on_those_nodes():
    graph = random_graph(30, 120, 5)
    emb = manifolds.poincare.init(30, 2, scale=0.5, generator=torch.Generator().manual_seed(0))
    nodes = sample_nodes(graph, 10, seed=0)
    assert len(nodes) == 10
    assert np.array_equal(nodes, sample_nodes(graph, 10, seed=0))  # fixed by the seed
    sub = reconstruction(emb, graph, "poincare", nodes=nodes)
    assert sub.nodes == 10


def test_perfect_tree_embedding_gives_rank_one_and_map_one():
    # root at the origin; two children at radius 0.5 on opposite sides; each with two
    # grandchildren at radius 0.7, 30 degrees either side of their parent. Closure edges.
    names = ["root", "c0", "c1", "g00", "g01", "g10", "g11"]
    idx = {n: i for i, n in enumerate(names)}
    edges = []
    emb = torch.zeros(len(names), 2, dtype=torch.float64)
    for i, a in enumerate((0.0, np.pi)):
        edges.append((idx[f"c{i}"], idx["root"]))
        emb[idx[f"c{i}"]] = torch.tensor([0.5 * np.cos(a), 0.5 * np.sin(a)])
        for j, b in enumerate((a - np.pi / 6, a + np.pi / 6)):
            g = idx[f"g{i}{j}"]
            edges += [(g, idx[f"c{i}"]), (g, idx["root"])]
            emb[g] = torch.tensor([0.7 * np.cos(b), 0.7 * np.sin(b)])
    graph = from_edges(names, np.array(edges))
    r = reconstruction(emb, graph, "poincare")
    assert (r.mean_rank, r.map) == (1.0, 1.0)
    # and swapping a grandchild with its parent breaks it
    emb[[idx["c0"], idx["g00"]]] = emb[[idx["g00"], idx["c0"]]]
    worse = reconstruction(emb, graph, "poincare")
    assert worse.mean_rank > 1.0 and worse.map < 1.0
