"""Euclidean baseline. The original's Euclidean "distance" is the squared norm; so is ours."""

import torch


def distance(u: torch.Tensor, v: torch.Tensor, *, eps: float = 0.0) -> torch.Tensor:
    return (u - v).pow(2).sum(-1)


def project(x: torch.Tensor) -> torch.Tensor:
    return x


def rgrad(x: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
    return egrad


def retract(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    return x + step


def init(n: int, dim: int, *, scale: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, dim, generator=generator, dtype=torch.float64) * 2 - 1) * scale
