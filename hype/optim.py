"""Riemannian SGD over rows of an embedding table, for the batched torch path.

Why not geoopt's RiemannianSGD: it updates the whole parameter each step (dense), while each
batch touches at most B * (2 + K) rows; on mammals the dense update alone costs more than the
batch. This one applies the sparse gradient's rows only: rgrad, retract, project.
"""

from __future__ import annotations

import torch

from hype import manifolds


class RiemannianSGD:
    def __init__(self, emb: torch.Tensor, *, manifold: str, lr: float):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr} (must be > 0)")
        self.emb = emb  # (N, D), a leaf with requires_grad; gradients arrive sparse
        self.geometry = manifolds.get(manifold)
        self.lr = lr

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        grad = self.emb.grad
        if grad is None:
            return
        lr = self.lr if lr is None else lr
        if grad.is_sparse:
            grad = grad.coalesce()
            rows, egrad = grad.indices()[0], grad.values()  # (R,), (R, D)
        else:
            rows = torch.nonzero(grad.abs().sum(-1)).squeeze(-1)
            egrad = grad[rows]
        x = self.emb.data[rows]
        self.emb.data[rows] = self.geometry.retract(x, -lr * self.geometry.rgrad(x, egrad))
        self.emb.grad = None
