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
Compiled calls, on several threads over chunks of rows, compute the keys of a tile of rows
against a block of columns at a time (the block of the transposed table stays in cache and the inner loop runs
across columns, so it vectorises) and drops every key below the row's farthest neighbour into
one of |N(u)| + 1 buckets. u itself and its neighbours went into the buckets too: their keys,
computed by the same arithmetic, are taken out again, which is cheaper than testing every
column for membership. Memory is O(N * D) for the transposed table plus O(tile * block)
per thread.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import njit

from hype import jit, manifolds
from hype.data import Graph, from_edges

POINCARE, LORENTZ, EUCLIDEAN = 0, 1, 2  # hype.manifolds.KERNEL_ID
_TILE = 8  # rows per work item; they share each column block while it is in cache
_BLOCK = 512  # columns per block: (D, 512) float64 of the table plus (512,) keys per row


@dataclass(frozen=True)
class Reconstruction:
    mean_rank: float
    map: float
    nodes: int  # how many source nodes were ranked
    edges: int  # how many (u, v) pairs


# Keys of one column and of a block of columns. A pair (_x_key, _x_keys) does exactly the same
# arithmetic for a column (same order, no fast-math), so a neighbour's key equals the key the
# block pass computed for it. Only the pair of the manifold a run evaluates is compiled.

@njit(cache=True, nogil=True, _nrt=False)
def _sq_key(table_t, den, u_col, w):
    """|u - w|^2 for the row whose coordinates are table_t[:, u_col]; over den[w] = 1 - |w|^2
    when den is not empty (Poincaré)."""
    acc = 0.0
    for d in range(table_t.shape[0]):
        diff = table_t[d, w] - table_t[d, u_col]
        acc += diff * diff
    if den.shape[0] > 0:
        return acc / den[w]
    return acc


@njit(cache=True, nogil=True, _nrt=False)
def _sq_keys(table_t, den, u_col, start, stop, out):
    """out[:stop - start] <- _sq_key of columns start..stop-1 (vectorised: each coordinate is
    a contiguous 1-D slice, so the loops over k run at unit stride)."""
    n = stop - start
    for k in range(n):
        out[k] = 0.0
    for d in range(table_t.shape[0]):
        ud = table_t[d, u_col]
        col = table_t[d, start:stop]
        for k in range(n):
            diff = col[k] - ud
            out[k] += diff * diff
    if den.shape[0] > 0:
        dn = den[start:stop]
        for k in range(n):
            out[k] = out[k] / dn[k]


@njit(cache=True, nogil=True, _nrt=False)
def _lorentz_key(table_t, u_col, w):
    """u0 w0 - <u_s, w_s> (= -<u, w>_L = cosh d)."""
    acc = table_t[0, u_col] * table_t[0, w]
    for d in range(1, table_t.shape[0]):
        acc -= table_t[d, u_col] * table_t[d, w]
    return acc


@njit(cache=True, nogil=True, _nrt=False)
def _lorentz_keys(table_t, u_col, start, stop, out):
    n = stop - start
    ud = table_t[0, u_col]
    col = table_t[0, start:stop]
    for k in range(n):
        out[k] = ud * col[k]
    for d in range(1, table_t.shape[0]):
        ud = table_t[d, u_col]
        col = table_t[d, start:stop]
        for k in range(n):
            out[k] -= ud * col[k]


@njit(cache=True, nogil=True, _nrt=False)
def _sort_row(a, r, m):
    """a[r, :m] ascending, in place: heapsort, O(m log m) without allocating (numba's np.sort
    and a slice assignment cost 3.4 s of compilation, more than the rest of this file)."""
    for start in range(m // 2 - 1, -1, -1):
        _sift(a, r, start, m)
    for end in range(m - 1, 0, -1):
        a[r, 0], a[r, end] = a[r, end], a[r, 0]
        _sift(a, r, 0, end)


@njit(inline="always")  # two call sites of a short loop: 0.1 s less than an ordinary call
def _sift(a, r, root, end):
    """Restore the max-heap a[r, root:end] whose children of root are heaps."""
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and a[r, child] < a[r, child + 1]:
            child += 1
        if a[r, root] >= a[r, child]:
            return
        a[r, root], a[r, child] = a[r, child], a[r, root]
        root = child


# _key and _rank_chunk carry `mid`: inlined (numba IR) into one entry per manifold that passes
# a constant, their branches on it are pruned before typing, as in hype.kernels. The entries
# use numpy's error model: with Python's, every division checks for zero (there is none: den
# >= 1e-15), which kept the key loops from vectorising (1.4x the time per row).

@njit(inline="always")
def _key(mid, table_t, den, u_col, w):
    if mid == LORENTZ:
        return _lorentz_key(table_t, u_col, w)
    return _sq_key(table_t, den, u_col, w)


@njit(inline="always")
def _rank_chunk(mid, table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer):
    """Fill rank_sums (B,) and aps (B,) for rows (B,), each ranked against all N columns.

    Scratch: nb (TILE, m) float64, each row's sorted neighbour keys; closer (TILE, m) int64,
    the columns with key < nb[r, j]; m is the rows' largest out-degree.
    """
    n = table_t.shape[1]
    n_rows = rows.shape[0]
    # allocated here, not passed in: then LLVM knows it aliases no table column, and the key
    # loops run 1.2x faster
    keys = np.empty(_BLOCK)
    for b0 in range(0, n_rows, _TILE):
        b1 = min(b0 + _TILE, n_rows)
        for b in range(b0, b1):
            r = b - b0
            u = rows[b]
            lo = indptr[u]
            m = indptr[u + 1] - lo
            for j in range(m):
                nb[r, j] = _key(mid, table_t, den, u, indices[lo + j])
                closer[r, j] = 0
            _sort_row(nb, r, m)
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            for b in range(b0, b1):
                r = b - b0
                m = indptr[rows[b] + 1] - indptr[rows[b]]
                if mid == LORENTZ:
                    _lorentz_keys(table_t, rows[b], start, stop, keys)
                else:
                    _sq_keys(table_t, den, rows[b], start, stop, keys)
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


@njit(cache=True, nogil=True, error_model="numpy")
def _rank_poincare(table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer):
    _rank_chunk(POINCARE, table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer)


@njit(cache=True, nogil=True, error_model="numpy")
def _rank_lorentz(table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer):
    _rank_chunk(LORENTZ, table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer)


@njit(cache=True, nogil=True, error_model="numpy")
def _rank_euclidean(table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer):
    _rank_chunk(EUCLIDEAN, table_t, den, rows, indptr, indices, rank_sums, aps, nb, closer)


_RANK = {POINCARE: _rank_poincare, LORENTZ: _rank_lorentz, EUCLIDEAN: _rank_euclidean}


def _table(emb: torch.Tensor, manifold: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(kernel id, (D, N) transposed float64 table, (N,) poincare denominators 1 - |w|^2)."""
    manifolds.get(manifold)  # names the choices if `manifold` is unknown
    mid = manifolds.KERNEL_ID[manifold]
    table = emb.detach().to(torch.float64).numpy()
    table_t = np.ascontiguousarray(table.T)
    den = np.maximum(1.0 - (table * table).sum(axis=1), 1e-15) if mid == POINCARE else np.ones(0)
    return mid, table_t, den


def reconstruction(emb: torch.Tensor, graph: Graph, manifold: str, *,
                   nodes: np.ndarray | None = None, chunk: int = 512) -> Reconstruction:
    """Exact mean rank and MAP of `emb` (N, D) on `graph`, optionally over a subset of source nodes.

    At most `chunk` rows go to each compiled call, and the calls run on numba's thread count
    (NUMBA_NUM_THREADS) of threads: Python threads over nogil calls, as parallel=True cost
    up to 1 s more to compile. Memory beyond the (D, N) table is O(N) for the per-row sums and
    O(threads * tile * (block + degree)) of scratch. The result depends on neither: the
    per-row sums are added up in row order.
    """
    mid, table_t, den = _table(emb, manifold)
    rows_all = np.arange(graph.num_nodes) if nodes is None else np.asarray(nodes, dtype=np.int64)
    degree = np.diff(graph.indptr)
    rows_all = np.ascontiguousarray(rows_all[degree[rows_all] > 0], dtype=np.int64)
    if len(rows_all) == 0:
        raise ValueError("no node with neighbours to evaluate")
    indptr = np.ascontiguousarray(graph.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(graph.indices, dtype=np.int64)
    rank_sums = np.empty(len(rows_all))  # (B,) per row, summed at the end in row order
    aps = np.empty(len(rows_all))
    threads = max(1, numba.config.NUMBA_NUM_THREADS)
    # a few chunks per thread, so that a small graph keeps every thread busy to the end
    size = max(1, min(chunk, math.ceil(len(rows_all) / (4 * threads))))
    entry = _RANK[mid]

    def rank(start: int) -> None:
        stop = min(start + size, len(rows_all))
        m = int(degree[rows_all[start:stop]].max())
        entry(table_t, den, rows_all[start:stop], indptr, indices, rank_sums[start:stop],
              aps[start:stop], np.empty((_TILE, m)), np.empty((_TILE, m), dtype=np.int64))

    starts = range(0, len(rows_all), size)
    m = int(degree[rows_all].max())  # compiled (or loaded) once, before the threads start
    jit.prepare(entry, table_t, den, rows_all, indptr, indices, rank_sums, aps,
                np.empty((_TILE, m)), np.empty((_TILE, m), dtype=np.int64))
    if threads == 1 or len(starts) == 1:
        for start in starts:
            rank(start)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(rank, starts))  # re-raises a chunk's error here
    pairs = int(degree[rows_all].sum())
    return Reconstruction(float(rank_sums.sum()) / pairs, float(aps.sum()) / len(rows_all),
                          len(rows_all), pairs)


def precompile(manifold: str) -> None:
    """Compile (or load) `manifold`'s evaluator, by evaluating a 2-node graph: every call of
    reconstruction() uses the one signature this compiles (hype.warmup)."""
    emb = manifolds.get(manifold).init(2, 2, scale=1e-3, generator=torch.Generator().manual_seed(0))
    reconstruction(emb, from_edges(["a", "b"], np.array([[0, 1]])), manifold)


def evaluator_cached(manifold: str) -> bool:
    """Whether numba's cache holds `manifold`'s evaluator for this machine and this source
    (True too when that cannot be read, or the folder cannot be written: a helper could not
    warm it). Reads numba's private index (numba is pinned): an entry counts when its codegen
    is this machine's."""
    manifolds.get(manifold)  # names the choices if `manifold` is unknown
    entry = _RANK[manifolds.KERNEL_ID[manifold]]
    folder = jit.cache_dir(entry)
    if folder is None or not _writable(folder):
        return True
    try:
        index = entry._cache._cache_file._load_index()  # {} when stale (another source stamp)
        magic = entry.targetctx.codegen().magic_tuple()
        return any(key[1] == magic for key in index)
    except Exception:  # noqa: BLE001 - a cache it cannot read is not worth a helper
        return True


def _writable(folder: str) -> bool:
    """Whether `folder` can be made and written: the nearest path at or above it that exists
    is a writable folder."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK)  # not below a file


def sample_nodes(graph: Graph, size: int, *, seed: int) -> np.ndarray:
    """A fixed, seeded subset of source nodes for the fast estimate logged during training."""
    candidates = np.flatnonzero(np.diff(graph.indptr) > 0)
    if size >= len(candidates):
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, size=size, replace=False))
