"""Compiled per-edge Riemannian SGD (numba), operating in place on the embedding's memory.

Why a compiled kernel: at the original's batch of 10, Python overhead per batch dominates
(a batched torch step costs ~100x the arithmetic). Like word2vec and UMAP, we update one
positive edge and its negatives at a time; the step per edge is lr / batch_size, which is
what the original's batch-averaged loss gives each edge (see README, "Learning rate").

Loss per edge (u, v) with negatives v'_1..v'_K (the original's "distance" model):
    L = -log softmax(-d(u, v), -d(u, v'_1), ..., -d(u, v'_K))[0]
    dL/dd_0 = 1 - p_0,   dL/dd_j = -p_j
Riemannian gradients, derived by hand (u, v are (D,) rows; d' = dL/dd):
    Poincaré:  rgrad_u = d' / (beta sqrt(g^2-1)) * ((1 - 2<u,v> + |v|^2) u - alpha v)
               (the inverse metric (alpha^2/4) cancels the Euclidean gradient's 4/alpha^2)
    Lorentz:   rgrad_u = d' * (z u - v) / sqrt(z^2 - 1),  z = -<u,v>_L; then exp_u(-step rgrad)
    Euclidean: grad_u = d' * 2 (u - v)  (distance is the squared norm, as in the original)
The manifold is an integer (hype.manifolds.KERNEL_ID) so that one compiled loop serves all three.
"""

import math

import numpy as np
from numba import njit

POINCARE, LORENTZ, EUCLIDEAN = 0, 1, 2
BOUNDARY_EPS = 1e-5  # same as hype.manifolds.poincare.BOUNDARY_EPS
_EPS = 1e-12
_MAX_TRIES = 20  # negative draws per slot before giving up on finding a non-neighbour


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _dist_and_grads(mid, x, y, gx, gy):
    """Distance d(x, y); writes Riemannian d d/dx into gx and d d/dy into gy."""
    dim = x.shape[0]
    if mid == POINCARE:
        sx = 0.0
        sy = 0.0
        xy = 0.0
        for k in range(dim):
            sx += x[k] * x[k]
            sy += y[k] * y[k]
            xy += x[k] * y[k]
        alpha = max(1.0 - sx, _EPS)
        beta = max(1.0 - sy, _EPS)
        sq_diff = max(sx + sy - 2.0 * xy, 0.0)
        g = 1.0 + 2.0 * sq_diff / (alpha * beta)
        root = math.sqrt(max(g * g - 1.0, _EPS))
        cx = (1.0 - 2.0 * xy + sy) / (beta * root)
        cy = (1.0 - 2.0 * xy + sx) / (alpha * root)
        for k in range(dim):
            gx[k] = cx * x[k] - (alpha / (beta * root)) * y[k]
            gy[k] = cy * y[k] - (beta / (alpha * root)) * x[k]
        return math.log(g + root)
    elif mid == LORENTZ:
        z = x[0] * y[0]
        for k in range(1, dim):
            z -= x[k] * y[k]
        z = max(z, 1.0 + _EPS)
        root = math.sqrt(max(z * z - 1.0, _EPS))
        for k in range(dim):
            gx[k] = (z * x[k] - y[k]) / root
            gy[k] = (z * y[k] - x[k]) / root
        return math.log(z + root)
    else:
        d = 0.0
        for k in range(dim):
            diff = x[k] - y[k]
            d += diff * diff
            gx[k] = 2.0 * diff
            gy[k] = -2.0 * diff
        return d


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _apply(mid, x, grad, scale):
    """x <- retract(x, -scale * grad), in place, then back onto the manifold."""
    dim = x.shape[0]
    if mid == LORENTZ:
        # exp map; the tangent norm is clamped so that cosh/sinh stay finite
        sq = -grad[0] * grad[0]
        for k in range(1, dim):
            sq += grad[k] * grad[k]
        norm = math.sqrt(max(sq, 0.0))
        n = abs(scale) * norm  # |step| in the tangent space; scale < 0 moves towards
        if n < 1e-15:
            return
        c = math.cosh(min(n, 50.0))
        s = math.sinh(min(n, 50.0)) / norm * (1.0 if scale > 0 else -1.0)
        space = 0.0
        for k in range(1, dim):
            x[k] = c * x[k] - s * grad[k]
            space += x[k] * x[k]
        x[0] = math.sqrt(1.0 + space)
        return
    for k in range(dim):
        x[k] -= scale * grad[k]
    if mid == POINCARE:
        norm = 0.0
        for k in range(dim):
            norm += x[k] * x[k]
        norm = math.sqrt(norm)
        max_norm = 1.0 - BOUNDARY_EPS
        if norm > max_norm:
            for k in range(dim):
                x[k] *= max_norm / norm


@njit(cache=True, nogil=True, fastmath=True)
def edge_step(emb, mid, u, targets, step, gx, gy, gu, coef):
    """One SGD step on the edge (u, targets[0]) with negatives targets[1:], in place.

    emb: (N, D) float64; targets: (1 + K,) int64; scratch: gx, gy (1 + K, D), gu (D,), coef (1 + K,).
    All gradients are taken at the current points, then applied. Returns the edge's loss.
    """
    n = targets.shape[0]
    m = 1e300
    for j in range(n):
        coef[j] = _dist_and_grads(mid, emb[u], emb[targets[j]], gx[j], gy[j])
        m = min(m, coef[j])
    # softmax over -d, shifted by the smallest distance for stability
    total = 0.0
    for j in range(n):
        coef[j] = math.exp(m - coef[j])
        total += coef[j]
    loss = -math.log(max(coef[0] / total, 1e-300))
    for j in range(n):
        coef[j] = -coef[j] / total
    coef[0] += 1.0
    for k in range(gu.shape[0]):
        acc = 0.0
        for j in range(n):
            acc += coef[j] * gx[j, k]
        gu[k] = acc
    for j in range(n):
        _apply(mid, emb[targets[j]], gy[j], step * coef[j])
    _apply(mid, emb[u], gu, step)
    return loss


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _is_neighbour(indptr, indices, u, w):
    lo = indptr[u]
    hi = indptr[u + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < w:
            lo = mid + 1
        else:
            hi = mid
    return lo < indptr[u + 1] and indices[lo] == w


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _draw(n, cdf):
    """A node index: uniform, or from the cumulative weights cdf (burn-in) when it is non-empty."""
    if cdf.shape[0] == 0:
        return np.random.randint(0, n)
    r = np.random.random() * cdf[cdf.shape[0] - 1]
    return np.searchsorted(cdf, r, side="right")


@njit(cache=True, nogil=True, fastmath=True)
def sample_negatives(u, v, n, negs, indptr, indices, cdf, out):
    """Fill out[1:] with negatives for u: not u, not an out-neighbour of u. out[0] = v.

    A slot that finds no non-neighbour in _MAX_TRIES draws repeats v, whose softmax term then
    cancels out of the loss's gradient direction (as padding does in the original).
    """
    out[0] = v
    for j in range(1, negs + 1):
        w = v
        for _ in range(_MAX_TRIES):
            c = _draw(n, cdf)
            if c != u and not _is_neighbour(indptr, indices, u, c):
                w = c
                break
        out[j] = w


@njit(cache=True, nogil=True, fastmath=True)
def train_edges(emb, mid, edges, order, indptr, indices, cdf, negs, step, seed):
    """One pass over edges[order] (a shuffled slice of an epoch). Returns the summed loss.

    emb: (N, D) float64, updated in place (Hogwild when several threads share it);
    edges: (E, 2) int64; order: (M,) int64; cdf: (N,) or (0,) float64.
    """
    np.random.seed(seed)  # numba's RNG is per thread, so each worker has its own stream
    n = emb.shape[0]
    targets = np.empty(negs + 1, dtype=np.int64)
    gx = np.empty((negs + 1, emb.shape[1]))
    gy = np.empty((negs + 1, emb.shape[1]))
    gu = np.empty(emb.shape[1])
    coef = np.empty(negs + 1)
    total = 0.0
    for i in range(order.shape[0]):
        e = order[i]
        u = edges[e, 0]
        sample_negatives(u, edges[e, 1], n, negs, indptr, indices, cdf, targets)
        total += edge_step(emb, mid, u, targets, step, gx, gy, gu, coef)
    return total
