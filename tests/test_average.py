"""Iterate averaging (hype.manifolds.average): the Lorentzian centroid of each node's points."""

from __future__ import annotations

import pytest
import torch

from hype import manifolds
from hype.manifolds import lorentz, poincare


def _points(name: str, n: int = 50, dim: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return manifolds.get(name).init(n, dim, scale=0.4 if name == "poincare" else 3.0, generator=g)


@pytest.mark.parametrize("name", ["poincare", "lorentz", "euclidean"])
def test_the_average_of_one_point_is_the_point(name):
    x = _points(name)
    assert torch.allclose(manifolds.average(name, [x, x, x]), x, atol=1e-12)


def test_the_average_stays_on_the_manifold_and_between_the_points():
    a, b = _points("lorentz", seed=1), _points("lorentz", seed=2)
    m = manifolds.average("lorentz", [a, b])
    inner = m[:, 0] ** 2 - (m[:, 1:] ** 2).sum(-1)
    assert torch.allclose(inner, torch.ones_like(inner), atol=1e-9)  # on the hyperboloid
    d_ab, d_am, d_bm = (lorentz.distance(a, b), lorentz.distance(a, m), lorentz.distance(b, m))
    assert torch.allclose(d_am, d_bm, atol=1e-9)  # the midpoint of two points: equidistant
    assert torch.all(d_am <= d_ab / 2 + 1e-9)


def test_poincare_points_are_averaged_as_their_hyperboloid_points():
    a, b = _points("poincare", seed=3), _points("poincare", seed=4)
    m = manifolds.average("poincare", [a, b])
    assert torch.all(m.norm(dim=-1) < 1)
    assert torch.allclose(poincare.distance(a, m), poincare.distance(b, m), atol=1e-8)
    # a small cloud around a point near the boundary averages near that point, not nearer the origin
    c = torch.tensor([[0.999, 0.0]], dtype=torch.float64)
    jitter = [c + torch.tensor([[0.0, d]], dtype=torch.float64) for d in (-1e-4, 0.0, 1e-4)]
    assert poincare.distance(manifolds.average("poincare", jitter), c).item() < 0.01
