"""The embedding table and the original's "distance" loss, in batched torch (autograd).

This is the reference path (and the one that runs on a GPU); the compiled CPU kernel in
hype/kernels.py implements the same loss with hand-derived gradients and is tested against it.
"""

from __future__ import annotations

import numpy as np
import torch

from hype import manifolds


def init_embedding(n: int, dim: int, manifold: str, *, scale: float, seed: int) -> torch.Tensor:
    """(n, dim) or, for lorentz, (n, dim + 1) float64 points near the origin."""
    gen = torch.Generator().manual_seed(seed)
    return manifolds.get(manifold).init(n, dim, scale=scale, generator=gen)


def edge_loss(u: torch.Tensor, targets: torch.Tensor, manifold: str) -> torch.Tensor:
    """Softmax cross-entropy of -d(u, v) against -d(u, v'_j).

    u: (B, D); targets: (B, 1 + K, D) with the positive first -> (B,) losses.
    """
    d = manifolds.get(manifold).distance(u.unsqueeze(1), targets)  # (B, 1 + K)
    return torch.nn.functional.cross_entropy(-d, torch.zeros(len(d), dtype=torch.long),
                                             reduction="none")


def sample_negatives_batch(u: np.ndarray, v: np.ndarray, negs: int, n: int, edge_keys: np.ndarray,
                           rng: np.random.Generator, weights: np.ndarray | None = None,
                           tries: int = 20) -> np.ndarray:
    """(B,) sources and positives -> (B, 1 + negs) targets, negatives among non-neighbours of u.

    edge_keys: sorted u * n + v of every edge. Slots with no valid draw after `tries` repeat v.
    """
    out = np.repeat(v[:, None], negs + 1, axis=1)
    open_slots = np.ones((len(u), negs), dtype=bool)
    p = None if weights is None else weights / weights.sum()
    for _ in range(tries):
        cand = rng.choice(n, size=(len(u), negs), p=p)
        keys = u[:, None] * n + cand
        pos = np.searchsorted(edge_keys, keys).clip(max=len(edge_keys) - 1)
        ok = open_slots & (cand != u[:, None]) & (edge_keys[pos] != keys)
        out[:, 1:][ok] = cand[ok]
        open_slots &= ~ok
        if not open_slots.any():
            break
    return out
