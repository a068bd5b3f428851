"""Reconstruction mean rank and MAP, exact, chunked over rows so memory stays bounded.

For each node u with out-neighbours N(u), and each v in N(u):
    rank(u, v) = 1 + |{w : w != u, w not in N(u), d(u, w) < d(u, v)}|
Mean rank averages rank(u, v) over all edges; MAP averages over nodes u the average precision
of N(u) when all w != u are ordered by d(u, .): the i-th closest neighbour (1-based) sits at
position i + (non-neighbours closer than it), so its precision is i / that position.

Distances are never materialised: a per-manifold key that is monotone in d(u, .) for fixed u
comes from one matmul per chunk (manifolds.*.rank_key), and a compiled pass counts, for every
non-neighbour, which neighbours it beats (O(N log |N(u)|) per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from hype import manifolds
from hype.data import Graph


@dataclass(frozen=True)
class Reconstruction:
    mean_rank: float
    map: float
    nodes: int  # how many source nodes were ranked
    edges: int  # how many (u, v) pairs


@njit(cache=True, parallel=True)
def _rank_rows(keys, rows, indptr, indices, rank_sums, aps):
    """keys: (B, N) float64 rank keys of rows (B,) against all nodes; fills rank_sums, aps (B,)."""
    n = keys.shape[1]
    for b in prange(rows.shape[0]):
        u = rows[b]
        lo, hi = indptr[u], indptr[u + 1]
        m = hi - lo
        if m == 0:
            rank_sums[b] = 0.0
            aps[b] = 0.0
            continue
        row = keys[b]
        nb = np.sort(row[indices[lo:hi]])  # (m,) neighbour keys, ascending
        counts = np.zeros(m + 1, dtype=np.int64)
        j = lo
        for w in range(n):
            # indices[lo:hi] is sorted: walk it alongside w to skip neighbours in O(1)
            while j < hi and indices[j] < w:
                j += 1
            if w == u or (j < hi and indices[j] == w):
                continue
            kw = row[w]
            if kw < nb[m - 1]:
                counts[np.searchsorted(nb, kw, side="right")] += 1
        closer = 0
        rsum = 0.0
        ap = 0.0
        for i in range(m):
            closer += counts[i]
            rsum += 1.0 + closer
            ap += (i + 1.0) / (i + 1.0 + closer)
        rank_sums[b] = rsum
        aps[b] = ap / m


def reconstruction(emb: torch.Tensor, graph: Graph, manifold: str, *,
                   nodes: np.ndarray | None = None, chunk: int = 512) -> Reconstruction:
    """Exact mean rank and MAP of `emb` (N, D) on `graph`, optionally over a subset of source nodes."""
    key_fn = manifolds.get(manifold).rank_key
    emb = emb.detach().to(torch.float64)
    rows_all = np.arange(graph.num_nodes) if nodes is None else np.asarray(nodes, dtype=np.int64)
    rows_all = rows_all[np.diff(graph.indptr)[rows_all] > 0]  # only nodes that have neighbours
    rank_total, ap_total, pairs = 0.0, 0.0, 0
    for start in range(0, len(rows_all), chunk):
        rows = rows_all[start:start + chunk]
        keys = key_fn(emb[torch.from_numpy(rows)], emb).numpy()  # (B, N)
        rank_sums = np.empty(len(rows))
        aps = np.empty(len(rows))
        _rank_rows(keys, rows, graph.indptr, graph.indices, rank_sums, aps)
        rank_total += rank_sums.sum()
        ap_total += aps.sum()
        pairs += int((graph.indptr[rows + 1] - graph.indptr[rows]).sum())
    if pairs == 0:
        raise ValueError("no node with neighbours to evaluate")
    return Reconstruction(rank_total / pairs, ap_total / len(rows_all), len(rows_all), pairs)


def sample_nodes(graph: Graph, size: int, *, seed: int) -> np.ndarray:
    """A fixed, seeded subset of source nodes for the fast estimate logged during training."""
    candidates = np.flatnonzero(np.diff(graph.indptr) > 0)
    if size >= len(candidates):
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, size=size, replace=False))
