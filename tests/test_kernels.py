"""The compiled per-edge step against torch autograd + Riemannian SGD on the same inputs, and
what a run compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hype import kernels, manifolds
from hype.model import edge_loss

ROOT = Path(__file__).resolve().parents[1]


def _points(manifold, n, dim, seed, scale):
    g = torch.Generator().manual_seed(seed)
    return manifolds.get(manifold).init(n, dim, scale=scale, generator=g)


def _torch_step(emb, manifold, u, targets, step):
    geo = manifolds.get(manifold)
    x = emb.clone().requires_grad_(True)
    loss = edge_loss(x[u].unsqueeze(0), x[targets].unsqueeze(0), manifold).sum()
    loss.backward()
    rows = torch.unique(torch.cat([torch.tensor([u]), torch.from_numpy(targets)]))
    out = emb.clone()
    with torch.no_grad():
        out[rows] = geo.retract(emb[rows], -step * geo.rgrad(emb[rows], x.grad[rows]))
    return out, float(loss.detach())


@pytest.mark.parametrize("manifold", ["poincare", "lorentz", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [0.1, 0.6])
def test_edge_step_matches_autograd(manifold, seed, scale):
    n, dim, negs, step = 12, 5, 6, 0.01
    emb = _points(manifold, n, dim, seed, scale / (dim ** 0.5))
    if manifold == "poincare" and scale > 0.5:
        emb = manifolds.poincare.project(emb * 1.6)  # some points near the boundary
    rng = np.random.default_rng(seed)
    u = 0
    targets = rng.choice(np.arange(1, n), size=negs + 1, replace=False).astype(np.int64)
    expected, expected_loss = _torch_step(emb, manifold, u, targets, step)

    got = emb.clone()
    loss = kernels.edge_step(got.numpy(), manifolds.KERNEL_ID[manifold], u, targets, step)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(got, emb)  # it moved


def _near_boundary(n, dim, seed, gap):
    """n points 1 - |x| ~ gap..10 gap from the boundary, at hyperbolic distances O(1) from the first."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(dim, generator=g, dtype=torch.float64)
    centre = centre / centre.norm()
    pts = centre + gap * torch.randn(n, dim, generator=g, dtype=torch.float64) * 2
    norms = 1 - gap * (1 + 9 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    return pts / pts.norm(dim=-1, keepdim=True) * norms


@pytest.mark.parametrize("gap", [1e-6, 1e-8])
def test_poincare_step_keeps_its_precision_near_the_boundary(gap):
    """The kernel computes |u - v|^2 from the differences, as the torch distance does. From
    sx + sy - 2<u, v> it cancelled: near 1 - 1e-8 its loss was off by 0.7%."""
    emb = _near_boundary(12, 10, 3, gap)
    assert 1 - float(emb.norm(dim=-1).max()) >= manifolds.poincare.BOUNDARY_EPS
    targets = np.arange(1, 8, dtype=np.int64)
    d = manifolds.poincare.distance(emb[0], emb[1:8])
    assert float(d.min()) > 0.1 and float(d.max()) < 10  # close pairs, in hyperbolic terms
    expected, expected_loss = _torch_step(emb, "poincare", 0, targets, 0.01)
    got = emb.clone()
    loss = kernels.edge_step(got.numpy(), 0, 0, targets, 0.01)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    torch.testing.assert_close(got, expected, rtol=0, atol=gap * 1e-4)
    assert not torch.equal(got, emb)


def test_poincare_stays_inside_ball():
    emb = manifolds.poincare.project(_points("poincare", 20, 3, 0, 1.0) * 10)
    targets = np.arange(1, 12, dtype=np.int64)
    for _ in range(50):
        kernels.edge_step(emb.numpy(), 0, 0, targets, 5.0)
    assert float(emb.norm(dim=-1).max()) < 1.0
    assert torch.isfinite(emb).all()


def test_lorentz_stays_on_hyperboloid():
    emb = _points("lorentz", 20, 4, 1, 0.5)
    targets = np.arange(1, 12, dtype=np.int64)
    for _ in range(50):
        kernels.edge_step(emb.numpy(), 1, 0, targets, 1.0)
    torch.testing.assert_close(manifolds.lorentz.inner(emb, emb), -torch.ones(20, dtype=torch.float64),
                               rtol=0, atol=1e-8)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_lorentz_steps_far_too_large_stay_finite_and_bounded(backend):
    """A step far too large throws points outwards: without the bound on the space-like norm, x0 grew by
    up to cosh(50) per step until exp(-d) underflowed to 0 for every target (ZeroDivisionError
    in the kernel, NaN in torch)."""
    emb = _points("lorentz", 20, 4, 2, 0.5)
    targets = np.arange(1, 12, dtype=np.int64)
    for _ in range(200):
        if backend == "numba":
            kernels.edge_step(emb.numpy(), 1, 0, targets, 200.0)
        else:
            emb, _ = _torch_step(emb, "lorentz", 0, targets, 200.0)
    assert torch.isfinite(emb).all()
    space = emb[:, 1:].norm(dim=-1)
    assert float(space.max()) <= manifolds.lorentz.MAX_SPACE_NORM * (1 + 1e-12)
    assert float(space.max()) > 1e4  # the step really did throw them out
    # on the hyperboloid (x0 from the space-like part; <x, x>_L = -1 loses 1e-6 to rounding here)
    torch.testing.assert_close(emb[:, 0], torch.sqrt(1 + space**2), rtol=1e-12, atol=0)


def test_negatives_are_never_neighbours_or_self():
    # node 0 is related to 1..5; negatives for 0 must come from 6..9
    indptr = np.array([0, 5] + [5] * 9, dtype=np.int64)
    indices = np.arange(1, 6, dtype=np.int64)
    out = np.empty(201, dtype=np.int64)
    np.random.seed(0)
    kernels.sample_negatives(0, 1, 10, 200, indptr, indices, np.empty(0), out)
    assert out[0] == 1
    assert set(out[1:]) <= set(range(6, 10)) | {1}
    assert set(range(6, 10)) <= set(out[1:])


def test_alias_table_reproduces_the_weights():
    weights = np.array([5.0, 0.0, 1.0, 3.0, 1.0])
    prob, alias = kernels.alias_table(np.cumsum(weights))
    n = len(weights)
    # each slot i is drawn with 1/n; it yields i with prob[i], alias[i] otherwise
    implied = np.zeros(n)
    for i in range(n):
        implied[i] += prob[i] / n
        implied[alias[i]] += (1 - prob[i]) / n
    np.testing.assert_allclose(implied, weights / weights.sum(), atol=1e-12)
    assert kernels.alias_table(np.empty(0))[0].shape == (0,)


def test_burnin_negatives_follow_the_degree_weights():
    # no edges from node 0, so every node but 0 is a valid negative for it
    n = 4
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(0, dtype=np.int64)
    weights = np.array([1.0, 1.0, 2.0, 6.0])
    out = np.empty(20_001, dtype=np.int64)
    np.random.seed(1)
    kernels.sample_negatives(0, 1, n, 20_000, indptr, indices, np.cumsum(weights), out)
    freq = np.bincount(out[1:], minlength=n) / 20_000
    np.testing.assert_allclose(freq[1:], weights[1:] / weights[1:].sum(), atol=0.02)
    assert freq[0] == 0


# What a run compiles (issue 14): fresh interpreters, as a run starts, each printing the numba
# functions it compiled (numba's compile events) and those it has an overload of at the end.
_RUN = """
import json, sys
import numpy as np
import torch
from numba.core import event
from hype import evaluate, kernels
from hype.data import from_edges

compiled = []
event.register("numba:compile", type("L", (event.Listener,), {
    "on_start": lambda self, ev: None,
    "on_end": lambda self, ev: compiled.append(ev.data["dispatcher"].py_func.__name__)})())
n = 30
edges = np.array([(i, (i + 1) % n) for i in range(n)] + [(i, (i + 2) % n) for i in range(n)])
graph = from_edges([f"n{i}" for i in range(n)], edges)
emb = torch.rand(n, 3, dtype=torch.float64) * 0.1
kernels.train_edges(emb.numpy(), 0, graph.edges, np.arange(graph.num_edges), graph.indptr,
                    graph.indices, np.cumsum(np.ones(n)), 5, 0.01, 1)
evaluate.reconstruction(emb, graph, "poincare")
have = sorted(name for mod in (kernels, evaluate) for name, f in vars(mod).items()
              if getattr(f, "signatures", None))
print(json.dumps({"compiled": compiled, "have": have}))
"""


def _start(cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    return subprocess.Popen([sys.executable, "-c", _RUN], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def test_runs_started_together_compile_one_manifold_once(tmp_path):
    """Two fresh interpreters on an empty cache, like the ranks of --workers on a fresh clone:
    one compiles each entry, the other waits for the lock and loads it; neither compiles (or
    loads) anything of the manifolds a Poincaré run does not use. About 10 s."""
    results = [_result(p) for p in [_start(tmp_path), _start(tmp_path)]]
    for name in ("_pass_poincare", "_rank_poincare"):
        assert sum(r["compiled"].count(name) for r in results) == 1, results
        assert all(name in r["have"] for r in results)
    others = [n for r in results for n in r["compiled"] + r["have"]
              if "lorentz" in n or "euclidean" in n]
    assert others == []  # pruned before typing
