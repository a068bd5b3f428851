"""Lorentz model (hyperboloid) of curvature -1, as free functions over the last dimension.

Points x in R^(D+1) with <x, x>_L = -x0^2 + sum_i xi^2 = -1 and x0 > 0.
d(u, v) = arcosh(-<u, v>_L)
"""

import torch

# The space-like part's norm is kept at most this: sinh(12.2) = 1e5, so no point gets further
# from the origin than d = arcosh x0 = 12.2. Further out, -<u, v>_L = u0 v0 - <u_s, v_s> is a
# difference of terms ~x0^2 (1e10 here): float64 keeps cosh d to 1e-6, but at x0 = 1e7 only to
# 1e-2, and nearby points lose their distance. (The ball computes |u - v|^2 from differences and
# goes to radius 21.4: hype.manifolds.poincare.BOUNDARY_EPS.)
# Without a bound, a large step sends x0 towards 1e21 per retraction (cosh is clamped at 50), and
# within a few epochs exp(-d) underflows to 0 for every target of an edge: a division by zero.
MAX_SPACE_NORM = 1e5


def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Minkowski inner product: (..., D+1), (..., D+1) -> (...)"""
    uv = u * v
    return uv[..., 1:].sum(-1) - uv[..., 0]


def distance(u: torch.Tensor, v: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    z = (-inner(u, v)).clamp_min(1 + eps)
    return torch.log(z + torch.sqrt(z.pow(2) - 1))


def project(x: torch.Tensor) -> torch.Tensor:
    """Back onto the hyperboloid by recomputing x0 from the space-like part."""
    space = x[..., 1:]
    norm = space.norm(dim=-1, keepdim=True)
    space = torch.where(norm > MAX_SPACE_NORM, space / norm * MAX_SPACE_NORM, space)
    x0 = torch.sqrt(1 + space.pow(2).sum(-1, keepdim=True))
    return torch.cat([x0, space], dim=-1)


def rgrad(x: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
    """Riemannian gradient: flip the time-like sign (inverse metric), then project to T_x."""
    h = egrad.clone()
    h[..., 0] = -h[..., 0]
    return h + inner(x, h).unsqueeze(-1) * x


def expmap(x: torch.Tensor, v: torch.Tensor, *, max_norm: float = 50.0) -> torch.Tensor:
    """exp_x(v) = cosh(|v|) x + sinh(|v|) v / |v| for tangent v (|v| clamped for stability)."""
    norm = torch.sqrt(inner(v, v).clamp_min(1e-15)).clamp_max(max_norm).unsqueeze(-1)
    return project(torch.cosh(norm) * x + torch.sinh(norm) * v / norm)


def retract(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    return expmap(x, step)


def init(n: int, dim: int, *, scale: float, generator: torch.Generator) -> torch.Tensor:
    """dim is the intrinsic dimension; returns (n, dim + 1) points near the origin (1, 0, ..., 0)."""
    space = (torch.rand(n, dim, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    return project(torch.cat([torch.zeros(n, 1, dtype=torch.float64), space], dim=-1))


def to_poincare(x: torch.Tensor) -> torch.Tensor:
    """Map to the Poincaré ball (for pictures and export): x_space / (1 + x0)."""
    return x[..., 1:] / (1 + x[..., :1])


def from_poincare(p: torch.Tensor) -> torch.Tensor:
    """The inverse of to_poincare: (..., D) in the ball -> (..., D+1) on the hyperboloid,
    (1 + |p|^2, 2p) / (1 - |p|^2)."""
    sq = (p * p).sum(-1, keepdim=True).clamp(max=1 - 1e-15)
    return torch.cat([1 + sq, 2 * p], dim=-1) / (1 - sq)
