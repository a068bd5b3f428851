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
On every manifold both gradients of d(u, v) have the form
    dd/du = cx u - ax v,    dd/dv = cy v - ay u
so a step keeps four scalars per target instead of two (D,) vectors, and u's gradient is
(sum_j d'_j cx_j) u - sum_j d'_j ax_j v_j, accumulated while the targets are updated.

What makes it fast (benchmarks/throughput.py; Poincaré, dim 10, 50 negatives, 82k nodes, one
thread: 157k edge-updates/s before these changes, about 640k after):
- no reference counting in the loop: the per-edge functions are compiled with _nrt=False
  (numba's private flag, numba is pinned), so passing arrays costs no atomic incref/decref;
  those were a fifth of the time on one thread, and contended between Hogwild threads;
- exp(-d) enters the softmax directly (1 / (g + sqrt(g^2 - 1)) with g = cosh d), so there is
  no log or exp per target, and the Poincaré coefficients share one division;
- |u|^2 is computed once per edge and each target row is read once, into a contiguous buffer
  (which also keeps repeated targets exact: all gradients are taken before any update);
- negatives come from a splitmix64 stream with a multiply-shift range reduction; burn-in's
  degree-weighted negatives from an alias table (built once per call) instead of a binary
  search of cdf per draw, which made a burn-in epoch 4x slower than the others;
- the neighbour test is one load from a per-call array of stamps (u and its neighbours carry
  the current edge's number) instead of a binary search of u's neighbour list.
The manifold is an integer (hype.manifolds.KERNEL_ID) so that one compiled loop serves all three.
"""

import math

import numpy as np
from numba import njit

POINCARE, LORENTZ, EUCLIDEAN = 0, 1, 2
BOUNDARY_EPS = 1e-5  # same as hype.manifolds.poincare.BOUNDARY_EPS
_EPS = 1e-12
_MAX_TRIES = 20  # negative draws per slot before giving up on finding a non-neighbour
_MAX_NORM_SQ = (1.0 - BOUNDARY_EPS) ** 2
# scal rows: softmax weight (then d loss / d distance), and the gradient coefficients above
_W, _CX, _AX, _CY, _AY = 0, 1, 2, 3, 4

# splitmix64 (Steele, Lea & Flood 2014): one add and two multiply-xorshifts per draw
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = (np.uint64(s) for s in (30, 27, 31, 32))
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always")
def _next(state):
    """Next 64 random bits; state is a (1,) uint64 array owned by one thread."""
    state[0] += _GOLDEN
    return _mix(state[0])


@njit(cache=True, nogil=True)
def rng_state(seed):
    """A (1,) uint64 splitmix64 state from an integer seed (mixed, so nearby seeds diverge)."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = _mix(np.uint64(seed) + _GOLDEN)
    return state


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _retract_row(mid, emb, r, grad, scale):
    """emb[r] <- retract(emb[r], -scale * grad), in place, then back onto the manifold."""
    dim = emb.shape[1]
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
            x = c * emb[r, k] - s * grad[k]
            emb[r, k] = x
            space += x * x
        emb[r, 0] = math.sqrt(1.0 + space)
        return
    sq = 0.0
    for k in range(dim):
        x = emb[r, k] - scale * grad[k]
        emb[r, k] = x
        sq += x * x
    if mid == POINCARE and sq > _MAX_NORM_SQ:
        shrink = (1.0 - BOUNDARY_EPS) / math.sqrt(sq)
        for k in range(dim):
            emb[r, k] *= shrink


@njit(cache=True, nogil=True, fastmath=True, _nrt=False)
def _edge_step(emb, mid, u, targets, step, rows, scal, uu, gu, grad):
    """edge_step with its real scratch: rows (1 + K, D), scal (5, 1 + K), uu, gu, grad (D,)."""
    n = targets.shape[0]
    dim = emb.shape[1]
    sx = 0.0
    for k in range(dim):
        x = emb[u, k]
        uu[k] = x  # u is never among its targets, but the copy keeps the row in registers/L1
        sx += x * x
    alpha = max(1.0 - sx, _EPS)
    w_min = 1e300
    for j in range(n):
        t = targets[j]
        if mid == LORENTZ:
            z = 0.0
            for k in range(1, dim):
                y = emb[t, k]
                rows[j, k] = y
                z -= uu[k] * y
            y = emb[t, 0]
            rows[j, 0] = y
            z = max(z + uu[0] * y, 1.0 + _EPS)
            root = math.sqrt(max(z * z - 1.0, _EPS))
            r = 1.0 / (root * (z + root))  # the only division per target
            inv_root = (z + root) * r
            scal[_W, j] = root * r  # exp(-arcosh z) = 1 / (z + root)
            scal[_CX, j] = z * inv_root
            scal[_AX, j] = inv_root
            scal[_CY, j] = z * inv_root
            scal[_AY, j] = inv_root
        elif mid == POINCARE:
            sy = 0.0
            xy = 0.0
            for k in range(dim):
                y = emb[t, k]
                rows[j, k] = y
                sy += y * y
                xy += uu[k] * y
            beta = max(1.0 - sy, _EPS)
            # cosh d = g = num / den with den = alpha beta, num = den + 2 |u - v|^2, so
            # g^2 - 1 = 4 |u - v|^2 (den + |u - v|^2) / den^2 (no cancellation near g = 1), and
            # with s = den sqrt(g^2 - 1): exp(-d) = den / (num + s), 1 / (beta root) = alpha / s.
            sq_diff = max(sx + sy - 2.0 * xy, 0.0)
            den = alpha * beta
            num = den + 2.0 * sq_diff
            s = math.sqrt(max(4.0 * sq_diff * (den + sq_diff), _EPS * den * den))
            r = 1.0 / (s * (num + s))  # the only division per target
            inv_s = (num + s) * r
            scal[_W, j] = den * s * r
            scal[_CX, j] = (1.0 - 2.0 * xy + sy) * alpha * inv_s
            scal[_AX, j] = alpha * alpha * inv_s
            scal[_CY, j] = (1.0 - 2.0 * xy + sx) * beta * inv_s
            scal[_AY, j] = beta * beta * inv_s
        else:
            d = 0.0
            for k in range(dim):
                y = emb[t, k]
                rows[j, k] = y
                diff = uu[k] - y
                d += diff * diff
            scal[_W, j] = d  # the distance for now; exp(w_min - d) below
            w_min = min(w_min, d)
            scal[_CX, j] = 2.0
            scal[_AX, j] = 2.0
            scal[_CY, j] = 2.0
            scal[_AY, j] = 2.0
    if mid == EUCLIDEAN:
        # softmax over -d, shifted by the smallest distance for stability
        for j in range(n):
            scal[_W, j] = math.exp(w_min - scal[_W, j])
    total = 0.0
    for j in range(n):
        total += scal[_W, j]
    loss = -math.log(max(scal[_W, 0] / total, 1e-300))
    inv_total = 1.0 / total
    for k in range(dim):
        gu[k] = 0.0
    a = 0.0  # sum_j d'_j cx_j: u's gradient is a * u - gu
    for j in range(n):
        c = -scal[_W, j] * inv_total + (1.0 if j == 0 else 0.0)  # d' = dL/dd_j
        a += c * scal[_CX, j]
        kx = c * scal[_AX, j]
        cy = scal[_CY, j]
        ay = scal[_AY, j]
        for k in range(dim):
            gu[k] += kx * rows[j, k]
            grad[k] = cy * rows[j, k] - ay * uu[k]
        _retract_row(mid, emb, targets[j], grad, step * c)
    for k in range(dim):
        grad[k] = a * uu[k] - gu[k]
    _retract_row(mid, emb, u, grad, step)
    return loss


@njit(cache=True, nogil=True, fastmath=True)
def edge_step(emb, mid, u, targets, step):
    """One SGD step on the edge (u, targets[0]) with negatives targets[1:], in place.

    emb: (N, D) float64; targets: (1 + K,) int64. All gradients are taken at the current
    points, then applied. Returns the edge's loss. For tests and one-off steps: it allocates
    its scratch per call, where train_edges allocates it once per pass.
    """
    n = targets.shape[0]
    dim = emb.shape[1]
    return _edge_step(emb, mid, u, targets, step, np.empty((n, dim)), np.empty((5, n)),
                      np.empty(dim), np.empty(dim), np.empty(dim))


@njit(cache=True, nogil=True)
def alias_table(cdf):
    """Walker's alias table (Vose's construction) for the weights whose cumulative sum is cdf.

    cdf: (N,) or (0,) float64 -> prob (N,) float64, alias (N,) int64; empty for an empty cdf.
    Drawing i uniformly, then keeping it with probability prob[i] or taking alias[i] instead,
    samples node w with probability (cdf[w] - cdf[w - 1]) / cdf[-1], in O(1) per draw.
    """
    n = cdf.shape[0]
    prob = np.ones(n)
    alias = np.arange(n)
    if n == 0:
        return prob, alias
    scaled = np.empty(n)  # weights scaled to mean 1
    prev = 0.0
    for i in range(n):
        scaled[i] = (cdf[i] - prev) * n / cdf[n - 1]
        prev = cdf[i]
    small = np.empty(n, dtype=np.int64)  # two stacks: below and at-or-above the mean
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    # what is left is 1 up to rounding: prob stays 1, alias itself
    return prob, alias


@njit(cache=True, nogil=True, inline="always")
def _draw(state, n, prob, alias):
    """A node index: uniform, or from the alias table (burn-in) when it is non-empty.

    One 64-bit draw serves both: the high 32 bits pick the slot, the low 32 bits the coin.
    """
    r = _next(state)
    i = np.int64(((r >> _S32) * np.uint64(n)) >> _S32)
    if prob.shape[0] == 0:
        return i
    coin = np.float64(r & _LOW32) * (1.0 / 4294967296.0)
    return i if coin < prob[i] else alias[i]


@njit(cache=True, nogil=True, _nrt=False)
def _sample(u, v, n, negs, indptr, indices, prob, alias, out, state, mark, stamp):
    """sample_negatives with its own stream; mark (N,) int32 holds stamps below `stamp` only.

    u and its out-neighbours get mark = stamp first, so testing a draw is one load from an
    array that stays in cache (4 bytes a node), not a search of u's neighbour list.
    """
    out[0] = v
    mark[u] = stamp
    for q in range(indptr[u], indptr[u + 1]):
        mark[indices[q]] = stamp
    for j in range(1, negs + 1):
        w = v
        for _ in range(_MAX_TRIES):
            c = _draw(state, n, prob, alias)
            if mark[c] != stamp:
                w = c
                break
        out[j] = w


@njit(cache=True, nogil=True)
def sample_negatives(u, v, n, negs, indptr, indices, cdf, out):
    """Fill out[1:] with negatives for u: not u, not an out-neighbour of u. out[0] = v.

    A slot that finds no non-neighbour in _MAX_TRIES draws repeats v, whose softmax term then
    cancels out of the loss's gradient direction (as padding does in the original).
    The stream is seeded from numba's np.random, so np.random.seed makes this call repeatable;
    train_edges keeps one splitmix64 stream and one mark array per call instead.
    """
    prob, alias = alias_table(cdf)
    _sample(u, v, n, negs, indptr, indices, prob, alias, out,
            rng_state(np.random.randint(0, 2**62)), np.zeros(n, dtype=np.int32), np.int32(1))


@njit(cache=True, nogil=True, fastmath=True)
def train_edges(emb, mid, edges, order, indptr, indices, cdf, negs, step, seed):
    """One pass over edges[order] (a shuffled slice of an epoch). Returns the summed loss.

    emb: (N, D) float64, updated in place (one rank's copy with several workers);
    edges: (E, 2) int64; order: (M,) int64; cdf: (N,) or (0,) float64.
    seed: this call's own random stream, so each rank has an independent one.
    """
    if order.shape[0] >= 2**31 - 1:
        raise ValueError("train_edges: at most 2**31 - 2 edges per call (int32 stamps)")
    state = rng_state(seed)
    n = emb.shape[0]
    mark = np.zeros(n, dtype=np.int32)  # see _sample: mark[w] == i + 1 while edge i excludes w
    dim = emb.shape[1]
    targets = np.empty(negs + 1, dtype=np.int64)
    rows = np.empty((negs + 1, dim))  # (1 + K, D) the targets' coordinates before the step
    scal = np.empty((5, negs + 1))
    uu = np.empty(dim)
    gu = np.empty(dim)
    grad = np.empty(dim)
    prob, alias = alias_table(cdf)  # O(N), against a binary search of cdf per draw
    return _pass(emb, mid, edges, order, indptr, indices, prob, alias, negs, step, state, mark,
                 targets, rows, scal, uu, gu, grad)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False)
def _pass(emb, mid, edges, order, indptr, indices, prob, alias, negs, step, state, mark, targets,
          rows, scal, uu, gu, grad):
    """train_edges' loop, without reference counting (it allocates nothing)."""
    n = emb.shape[0]
    total = 0.0
    for i in range(order.shape[0]):
        e = order[i]
        u = edges[e, 0]
        _sample(u, edges[e, 1], n, negs, indptr, indices, prob, alias, targets, state, mark,
                np.int32(i + 1))
        total += _edge_step(emb, mid, u, targets, step, rows, scal, uu, gu, grad)
    return total
