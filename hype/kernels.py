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
- rows narrower than SPECIALIZE_BELOW are a compile-time width (hype.jit.Constant), so LLVM
  unrolls the loops over a row instead of vectorizing them for widths they never reach: a
  mammal epoch at dim 5 in 0.61x the time on an AVX-512 Xeon.

What makes the first run fast (issue 14; benchmarks/first_run.py, docs/performance.md): a run
compiles one manifold's kernel, for one signature, once per machine.
- The manifold is an integer (hype.manifolds.KERNEL_ID), but each manifold has its own entry
  point (_pass_poincare, ...) that hands it as a constant to the inline="always" loop: numba
  prunes the other manifolds' branches before typing, so their functions (_lorentz_target, ...)
  are never compiled. The per-manifold functions themselves are compiled once each and
  inlined by LLVM (forceinline); inlining them in numba's IR instead doubled the compile time.
- Fewer compilation units: each costs numba a pipeline and an LLVM module. The scratch arrays
  and the alias table's are allocated by numpy in the Python wrappers (no numpy allocation code
  is compiled), and the random-number helpers, a few instructions each, are inlined.
- The entries are called through hype.jit, which compiles under a file lock: ranks that start
  together load what the first one compiled.
Everything compiled lives in this file: numba's cache checks only the source of the file a
cached function is in, so a callee in another module could change unnoticed.
"""

import math

import numpy as np
from numba import njit

from hype import jit

POINCARE, LORENTZ, EUCLIDEAN = 0, 1, 2
BOUNDARY_EPS = 1e-9  # same as hype.manifolds.poincare.BOUNDARY_EPS
_EPS = 1e-12
_MAX_TRIES = 20  # negative draws per slot before giving up on finding a non-neighbour
# Row widths (emb.shape[1]) below this are compiled as constants: with a trip count known, LLVM
# unrolls the loops over a row instead of vectorizing them for widths they never reach. On an
# AVX-512 Xeon a Poincaré mammal epoch took 0.60-0.83x the time at widths 2-6, the same at 10
# to 20, 1.19x at 8 and 1.15x at 50 (docs/performance.md, "Rows of a known width").
SPECIALIZE_BELOW = 8
_MAX_NORM_SQ = (1.0 - BOUNDARY_EPS) ** 2
LORENTZ_MAX_SPACE = 1e5  # same as hype.manifolds.lorentz.MAX_SPACE_NORM
_MAX_SPACE_SQ = LORENTZ_MAX_SPACE ** 2
# scal rows: softmax weight (then d loss / d distance), and the gradient coefficients above
_W, _CX, _AX, _CY, _AY = 0, 1, 2, 3, 4

# splitmix64 (Steele, Lea & Flood 2014): one add and two multiply-xorshifts per draw
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = (np.uint64(s) for s in (30, 27, 31, 32))
_LOW32 = np.uint64(0xFFFFFFFF)
# Nothing calls these kernels through a C pointer (ctypes, cfunc): every compiled function here
# skips that entry (no_cfunc_wrapper), and those only compiled code calls skip the Python one
# too (_CALLEE); numba builds and optimises fewer wrappers, 0.25 s less on a first run.
_CALLEE = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


# -- random numbers ---------------------------------------------------------------------------
# _mix, _next and _draw are a few instructions each: inlined, they save numba a compilation
# unit apiece (about 0.1 s each on a first run); _seed is also called from Python.

@njit(inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(inline="always")
def _next(state):
    """Next 64 random bits; state is a (1,) uint64 array owned by one thread."""
    state[0] += _GOLDEN
    return _mix(state[0])


@njit(cache=True, nogil=True, _nrt=False, no_cfunc_wrapper=True)
def _seed(state, seed):
    """state (1,) uint64 <- the stream of an integer seed (mixed, so nearby seeds diverge)."""
    state[0] = _mix(np.uint64(seed) + _GOLDEN)


def rng_state(seed: int) -> np.ndarray:
    """A (1,) uint64 splitmix64 state for `seed`."""
    state = np.empty(1, dtype=np.uint64)
    jit.call(_seed, state, int(seed))
    return state


@njit(inline="always")
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


# -- negatives --------------------------------------------------------------------------------

def alias_table(cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for the weights whose cumulative sum is cdf.

    cdf: (N,) or (0,) float64 -> prob (N,) float64, alias (N,) int64; empty for an empty cdf.
    Drawing i uniformly, then keeping it with probability prob[i] or taking alias[i] instead,
    samples node w with probability (cdf[w] - cdf[w - 1]) / cdf[-1], in O(1) per draw.
    """
    cdf = np.ascontiguousarray(cdf, dtype=np.float64)
    n = cdf.shape[0]
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    if n == 0:
        return prob, alias
    scaled = np.diff(cdf, prepend=0.0) * n / cdf[n - 1]  # weights scaled to mean 1
    jit.call(_vose, scaled, prob, alias, np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64))
    return prob, alias


@njit(cache=True, nogil=True, _nrt=False, no_cfunc_wrapper=True)
def _vose(scaled, prob, alias, small, large):
    """alias_table's loop, in place; small and large (N,) are its two stacks: weights below
    and at-or-above the mean. What is left at the end is 1 up to rounding: prob stays 1."""
    n = scaled.shape[0]
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


@njit(cache=True, nogil=True, _nrt=False, no_cfunc_wrapper=True)
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


def sample_negatives(u, v, n, negs, indptr, indices, cdf, out) -> None:
    """Fill out[1:] with negatives for u: not u, not an out-neighbour of u. out[0] = v.

    A slot that finds no non-neighbour in _MAX_TRIES draws repeats v, whose softmax term then
    cancels out of the loss's gradient direction (as padding does in the original).
    The stream is seeded from NumPy's global generator, so np.random.seed makes this call
    repeatable; train_edges keeps one splitmix64 stream and one mark array per call instead.
    """
    prob, alias = alias_table(cdf)
    jit.call(_sample, int(u), int(v), int(n), int(negs), _int64(indptr), _int64(indices), prob,
             alias, out, rng_state(np.random.randint(0, 2**62)), np.zeros(n, dtype=np.int32),
             np.int32(1))


# -- geometry: one function per manifold, compiled only for the manifold a run uses ------------
# forceinline: LLVM inlines them into the entry when it links (called per target, as calls they
# made an epoch 1.5x slower); numba still compiles each once, however many its call sites.

@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _poincare_target(emb, t, uu, sx, rows, scal, j, dim):
    """rows[j] <- emb[t]; scal[:, j] <- exp(-d(u, t)) and the coefficients, for |u|^2 = sx."""
    sy = 0.0
    sq_diff = 0.0  # |u - v|^2 from the differences: sx + sy - 2<u, v> cancels near the boundary
    for k in range(dim):
        y = emb[t, k]
        rows[j, k] = y
        sy += y * y
        diff = uu[k] - y
        sq_diff += diff * diff
    alpha = max(1.0 - sx, _EPS)
    beta = max(1.0 - sy, _EPS)
    # cosh d = g = num / den with den = alpha beta, num = den + 2 |u - v|^2, so
    # g^2 - 1 = 4 |u - v|^2 (den + |u - v|^2) / den^2 (no cancellation near g = 1), and
    # with s = den sqrt(g^2 - 1): exp(-d) = den / (num + s), 1 / (beta root) = alpha / s.
    den = alpha * beta
    num = den + 2.0 * sq_diff
    s = math.sqrt(max(4.0 * sq_diff * (den + sq_diff), _EPS * den * den))
    r = 1.0 / (s * (num + s))  # the only division per target
    inv_s = (num + s) * r
    scal[_W, j] = den * s * r
    scal[_CX, j] = (alpha + sq_diff) * alpha * inv_s  # 1 - 2<u, v> + |v|^2 = alpha + |u - v|^2
    scal[_AX, j] = alpha * alpha * inv_s
    scal[_CY, j] = (beta + sq_diff) * beta * inv_s
    scal[_AY, j] = beta * beta * inv_s


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _lorentz_target(emb, t, uu, rows, scal, j, dim):
    """rows[j] <- emb[t]; scal[:, j] <- exp(-d(u, t)) and the coefficients."""
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


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _euclidean_target(emb, t, uu, rows, scal, j, dim):
    """rows[j] <- emb[t]; scal[:, j] <- d(u, t) (exp(w_min - d) later) and the coefficients.
    Returns d."""
    d = 0.0
    for k in range(dim):
        y = emb[t, k]
        rows[j, k] = y
        diff = uu[k] - y
        d += diff * diff
    scal[_W, j] = d
    scal[_CX, j] = 2.0
    scal[_AX, j] = 2.0
    scal[_CY, j] = 2.0
    scal[_AY, j] = 2.0
    return d


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _lorentz_retract(emb, r, grad, scale, dim):
    """emb[r] <- exp_emb[r](-scale * grad), in place; the tangent norm is clamped so that
    cosh/sinh stay finite."""
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
    if space > _MAX_SPACE_SQ:  # as far from the origin as the Poincare ball lets a point go
        shrink = LORENTZ_MAX_SPACE / math.sqrt(space)
        for k in range(1, dim):
            emb[r, k] *= shrink
        space = _MAX_SPACE_SQ
    emb[r, 0] = math.sqrt(1.0 + space)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _euclidean_retract(emb, r, grad, scale, dim):
    """emb[r] <- emb[r] - scale * grad, in place."""
    for k in range(dim):
        emb[r, k] = emb[r, k] - scale * grad[k]


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, forceinline=True, **_CALLEE)
def _poincare_retract(emb, r, grad, scale, dim):
    """The Euclidean step, then back inside the ball (norm <= 1 - BOUNDARY_EPS)."""
    sq = 0.0
    for k in range(dim):
        x = emb[r, k] - scale * grad[k]
        emb[r, k] = x
        sq += x * x
    if sq > _MAX_NORM_SQ:
        shrink = (1.0 - BOUNDARY_EPS) / math.sqrt(sq)
        for k in range(dim):
            emb[r, k] *= shrink


# -- the per-edge step and the pass: generic in mid, inlined into one entry per manifold -------
# inline="always" (numba IR) because they carry `mid`: inlined into an entry that passes a
# constant, their branches on mid are pruned before typing, and the entry's flags apply.
# The per-manifold functions they call are not inlined in numba's IR (forceinline, above):
# that doubled the compile time (1.6 -> 3.1 s), as the retraction has two call sites.

@njit(inline="always")
def _edge_step(mid, emb, u, targets, step, work, dim):
    """edge_step with its scratch: work = rows (1 + K, D), scal (5, 1 + K), uu, gu, grad (D,)."""
    rows, scal, uu, gu, grad = work
    n = targets.shape[0]
    sx = 0.0
    for k in range(dim):
        x = emb[u, k]
        uu[k] = x  # u is never among its targets, but the copy keeps the row in registers/L1
        sx += x * x
    w_min = 1e300
    for j in range(n):
        if mid == LORENTZ:
            _lorentz_target(emb, targets[j], uu, rows, scal, j, dim)
        elif mid == POINCARE:
            _poincare_target(emb, targets[j], uu, sx, rows, scal, j, dim)
        else:
            w_min = min(w_min, _euclidean_target(emb, targets[j], uu, rows, scal, j, dim))
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
        if mid == LORENTZ:  # the target's row moves along -step c grad, onto the manifold
            _lorentz_retract(emb, targets[j], grad, step * c, dim)
        elif mid == POINCARE:
            _poincare_retract(emb, targets[j], grad, step * c, dim)
        else:
            _euclidean_retract(emb, targets[j], grad, step * c, dim)
    for k in range(dim):
        grad[k] = a * uu[k] - gu[k]
    if mid == LORENTZ:
        _lorentz_retract(emb, u, grad, step, dim)
    elif mid == POINCARE:
        _poincare_retract(emb, u, grad, step, dim)
    else:
        _euclidean_retract(emb, u, grad, step, dim)
    return loss


@njit(inline="always")
def _pass(mid, emb, edges, order, indptr, indices, prob, alias, negs, step, seed, sampling, work,
          dim):
    """train_edges' loop; sampling = targets (1 + K,) int64, mark (N,) int32, state (1,) uint64."""
    targets, mark, state = sampling
    _seed(state, seed)
    n = emb.shape[0]
    total = 0.0
    for i in range(order.shape[0]):
        e = order[i]
        u = edges[e, 0]
        _sample(u, edges[e, 1], n, negs, indptr, indices, prob, alias, targets, state, mark,
                np.int32(i + 1))
        total += _edge_step(mid, emb, u, targets, step, work, dim)
    return total


# -- entry points: one per manifold and job, each compiled the first time a run calls it -------
# (N, D) float64 emb; int64 graph arrays; float64 prob, int64 alias; ints negs, seed; float step

@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _pass_poincare(emb, edges, order, indptr, indices, prob, alias, negs, step, seed, sampling,
                   work, dim):
    return _pass(POINCARE, emb, edges, order, indptr, indices, prob, alias, negs, step, seed,
                 sampling, work, dim)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _pass_lorentz(emb, edges, order, indptr, indices, prob, alias, negs, step, seed, sampling,
                  work, dim):
    return _pass(LORENTZ, emb, edges, order, indptr, indices, prob, alias, negs, step, seed,
                 sampling, work, dim)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _pass_euclidean(emb, edges, order, indptr, indices, prob, alias, negs, step, seed, sampling,
                    work, dim):
    return _pass(EUCLIDEAN, emb, edges, order, indptr, indices, prob, alias, negs, step, seed,
                 sampling, work, dim)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _step_poincare(emb, u, targets, step, work, dim):
    return _edge_step(POINCARE, emb, u, targets, step, work, dim)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _step_lorentz(emb, u, targets, step, work, dim):
    return _edge_step(LORENTZ, emb, u, targets, step, work, dim)


@njit(cache=True, nogil=True, fastmath=True, _nrt=False, no_cfunc_wrapper=True)
def _step_euclidean(emb, u, targets, step, work, dim):
    return _edge_step(EUCLIDEAN, emb, u, targets, step, work, dim)


_PASS = {POINCARE: _pass_poincare, LORENTZ: _pass_lorentz, EUCLIDEAN: _pass_euclidean}
_STEP = {POINCARE: _step_poincare, LORENTZ: _step_lorentz, EUCLIDEAN: _step_euclidean}


def _entry(table: dict, mid: int):
    try:
        return table[mid]
    except KeyError:
        raise ValueError(f"Unknown manifold id {mid!r} (choose from {sorted(table)}: "
                         "hype.manifolds.KERNEL_ID)") from None


def _int64(a: np.ndarray) -> np.ndarray:
    """The one array type the entries are compiled for (a no-op for the graph's own arrays)."""
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_emb(emb: np.ndarray) -> None:
    # updated in place, so it cannot be converted
    if emb.dtype != np.float64 or emb.ndim != 2 or not emb.flags.c_contiguous or not emb.flags.writeable:
        raise ValueError(f"emb must be a writeable C-contiguous (N, D) float64 array, got {emb.dtype} "
                         f"{emb.shape} (contiguous: {emb.flags.c_contiguous}, writeable: "
                         f"{emb.flags.writeable})")


def _dim_arg(dim: int):
    """The entries' `dim`: below SPECIALIZE_BELOW a compile-time constant, which LLVM unrolls
    the loops over (one compilation per such dimension), else an int64 known at run time."""
    return jit.Constant(int(dim)) if dim < SPECIALIZE_BELOW else int(dim)


def _work(n_targets: int, dim: int) -> tuple:
    """An edge step's scratch: rows (1 + K, D), scal (5, 1 + K), uu, gu, grad (D,)."""
    return (np.empty((n_targets, dim)), np.empty((5, n_targets)), np.empty(dim), np.empty(dim),
            np.empty(dim))


def edge_step(emb: np.ndarray, mid: int, u: int, targets: np.ndarray, step: float) -> float:
    """One SGD step on the edge (u, targets[0]) with negatives targets[1:], in place.

    emb: (N, D) float64; targets: (1 + K,) int64. All gradients are taken at the current
    points, then applied. Returns the edge's loss. For tests and one-off steps: it allocates
    its scratch per call, where train_edges allocates it once per pass.
    """
    _check_emb(emb)
    targets = _int64(targets)
    return jit.call(_entry(_STEP, mid), emb, int(u), targets, float(step),
                    _work(targets.shape[0], emb.shape[1]), _dim_arg(emb.shape[1]))


def train_edges(emb, mid, edges, order, indptr, indices, cdf, negs, step, seed) -> float:
    """One pass over edges[order] (a shuffled slice of an epoch). Returns the summed loss.

    emb: (N, D) float64, updated in place (one rank's copy with several workers);
    edges: (E, 2) int64; order: (M,) int64; cdf: (N,) or (0,) float64.
    seed: this call's own random stream, so each rank has an independent one.
    """
    if order.shape[0] >= 2**31 - 1:
        raise ValueError("train_edges: at most 2**31 - 2 edges per call (int32 stamps)")
    _check_emb(emb)
    n, dim = emb.shape
    prob, alias = alias_table(cdf)  # O(N), against a binary search of cdf per draw
    # see _sample: mark[w] == i + 1 while edge i excludes w
    sampling = (np.empty(negs + 1, dtype=np.int64), np.zeros(n, dtype=np.int32),
                np.empty(1, dtype=np.uint64))
    return jit.call(_entry(_PASS, mid), emb, _int64(edges), _int64(order), _int64(indptr),
                    _int64(indices), prob, alias, int(negs), float(step), int(seed), sampling,
                    _work(negs + 1, dim), _dim_arg(dim))
