"""Reconstruction mean rank and MAP, exact, in bounded memory.

For each node u with out-neighbours N(u), and each v in N(u):
    rank(u, v) = 1 + |{w : w != u, w not in N(u), d(u, w) < d(u, v)}|
Mean rank averages rank(u, v) over all edges; MAP averages over nodes u the average precision
of N(u) when all w != u are ordered by d(u, .): the i-th closest neighbour (1-based) sits at
position i + (non-neighbours closer than it), so its precision is i / that position.

Distances are never materialised. For fixed u, a key monotone in d(u, .) is enough:
    poincare   |u - w|^2 / (1 - |w|^2)   (d = arcosh(1 + 2 key / (1 - |u|^2)))
    lorentz    u0 w0 - <u_s, w_s>         (= -<u, w>_L = cosh d)
    euclidean  |u - w|^2
A compiled pass, parallel over tiles of rows, computes the keys of a tile against a block of
columns at a time (the block of the transposed table stays in cache and the inner loop runs
across columns, so it vectorises) and drops every key below the row's farthest neighbour into
one of |N(u)| + 1 buckets. u itself and its neighbours went into the buckets too: their keys,
computed by the same arithmetic, are taken out again, which is cheaper than testing every
column for membership. Memory is O(N * D) for the transposed table plus O(tile * block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from hype import manifolds
from hype.data import Graph

_TILE = 8  # rows per parallel work item; they share each column block while it is in cache
_BLOCK = 512  # columns per block: (D, 512) float64 of the table plus (512,) keys per row


@dataclass(frozen=True)
class Reconstruction:
    mean_rank: float
    map: float
    nodes: int  # how many source nodes were ranked
    edges: int  # how many (u, v) pairs


@njit(cache=True, inline="always")
def _key(mid, table_t, den, u_col, w):
    """The key of column w against the row whose coordinates are table_t[:, u_col].

    Exactly the arithmetic of _keys_block for one column (same order, no fast-math), so a
    neighbour's key equals the key the block pass computed for it.
    """
    dim = table_t.shape[0]
    if mid == 1:  # lorentz
        acc = table_t[0, u_col] * table_t[0, w]
        for d in range(1, dim):
            acc -= table_t[d, u_col] * table_t[d, w]
        return acc
    acc = 0.0
    for d in range(dim):
        diff = table_t[d, w] - table_t[d, u_col]
        acc += diff * diff
    if mid == 0:  # poincare
        return acc / den[w]
    return acc


@njit(cache=True, inline="always")
def _keys_block(mid, table_t, den, u_col, start, stop, out):
    """out[:stop - start] <- keys of columns start..stop-1 against row u_col (vectorised).

    Each coordinate is a contiguous 1-D slice, so the loops over k run at unit stride.
    """
    dim = table_t.shape[0]
    n = stop - start
    if mid == 1:
        ud = table_t[0, u_col]
        col = table_t[0, start:stop]
        for k in range(n):
            out[k] = ud * col[k]
        for d in range(1, dim):
            ud = table_t[d, u_col]
            col = table_t[d, start:stop]
            for k in range(n):
                out[k] -= ud * col[k]
        return
    for k in range(n):
        out[k] = 0.0
    for d in range(dim):
        ud = table_t[d, u_col]
        col = table_t[d, start:stop]
        for k in range(n):
            diff = col[k] - ud
            out[k] += diff * diff
    if mid == 0:
        dn = den[start:stop]
        for k in range(n):
            out[k] = out[k] / dn[k]


@njit(cache=True, parallel=True)
def _rank_rows(mid, table_t, den, rows, indptr, indices, rank_sums, aps):
    """Fill rank_sums (B,) and aps (B,) for rows (B,), each ranked against all N columns."""
    n = table_t.shape[1]
    n_rows = rows.shape[0]
    max_m = 0
    for b in range(n_rows):
        max_m = max(max_m, indptr[rows[b] + 1] - indptr[rows[b]])
    for t in prange((n_rows + _TILE - 1) // _TILE):
        b0 = t * _TILE
        b1 = min(b0 + _TILE, n_rows)
        nb = np.empty((_TILE, max_m))  # (tile, m) sorted neighbour keys per row
        closer = np.zeros((_TILE, max_m), dtype=np.int64)  # columns with key < nb[r, j]
        keys = np.empty(_BLOCK)
        for b in range(b0, b1):
            u = rows[b]
            lo = indptr[u]
            m = indptr[u + 1] - lo
            for j in range(m):
                nb[b - b0, j] = _key(mid, table_t, den, u, indices[lo + j])
            nb[b - b0, :m] = np.sort(nb[b - b0, :m])
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            for b in range(b0, b1):
                r = b - b0
                m = indptr[rows[b] + 1] - indptr[rows[b]]
                _keys_block(mid, table_t, den, rows[b], start, stop, keys)
                # one vectorised counting pass per neighbour, farthest first; the thresholds
                # only shrink, so once a pass finds nothing the nearer ones cannot either
                for j in range(m - 1, -1, -1):
                    thr = nb[r, j]
                    c = 0
                    for k in range(stop - start):
                        if keys[k] < thr:
                            c += 1
                    if c == 0:
                        break
                    closer[r, j] += c
        for b in range(b0, b1):
            r = b - b0
            u = rows[b]
            lo = indptr[u]
            m = indptr[u + 1] - lo
            if m == 0:
                rank_sums[b] = 0.0
                aps[b] = 0.0
                continue
            # u and its neighbours were counted like any column: take them out again
            own = _key(mid, table_t, den, u, u)
            for i in range(m):
                if own < nb[r, i]:
                    closer[r, i] -= 1
                for j in range(m):
                    if nb[r, j] < nb[r, i]:
                        closer[r, i] -= 1
            rsum = 0.0
            ap = 0.0
            for i in range(m):
                rsum += 1.0 + closer[r, i]
                ap += (i + 1.0) / (i + 1.0 + closer[r, i])
            rank_sums[b] = rsum
            aps[b] = ap / m


def _table(emb: torch.Tensor, manifold: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(kernel id, (D, N) transposed float64 table, (N,) poincare denominators 1 - |w|^2)."""
    manifolds.get(manifold)  # names the choices if `manifold` is unknown
    mid = manifolds.KERNEL_ID[manifold]
    table = emb.detach().to(torch.float64).numpy()
    table_t = np.ascontiguousarray(table.T)
    den = np.maximum(1.0 - (table * table).sum(axis=1), 1e-15) if mid == 0 else np.ones(0)
    return mid, table_t, den


def reconstruction(emb: torch.Tensor, graph: Graph, manifold: str, *,
                   nodes: np.ndarray | None = None, chunk: int = 512) -> Reconstruction:
    """Exact mean rank and MAP of `emb` (N, D) on `graph`, optionally over a subset of source nodes.

    `chunk` rows go to each compiled call; memory does not depend on it beyond O(chunk).
    """
    mid, table_t, den = _table(emb, manifold)
    rows_all = np.arange(graph.num_nodes) if nodes is None else np.asarray(nodes, dtype=np.int64)
    rows_all = rows_all[np.diff(graph.indptr)[rows_all] > 0]  # only nodes that have neighbours
    rank_total, ap_total, pairs = 0.0, 0.0, 0
    for start in range(0, len(rows_all), chunk):
        rows = rows_all[start:start + chunk]
        rank_sums = np.empty(len(rows))
        aps = np.empty(len(rows))
        _rank_rows(mid, table_t, den, rows, graph.indptr, graph.indices, rank_sums, aps)
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
