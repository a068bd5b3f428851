"""The geometries. Each module holds free functions with the same names:
distance, project, rgrad, retract, init."""

from types import ModuleType

import torch

from hype.manifolds import euclidean, lorentz, poincare

_BY_NAME = {"poincare": poincare, "lorentz": lorentz, "euclidean": euclidean}
# integer ids used by the compiled kernels
KERNEL_ID = {"poincare": 0, "lorentz": 1, "euclidean": 2}


def get(name: str) -> ModuleType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown manifold {name!r} (choose from {', '.join(_BY_NAME)})") from None


def average(name: str, embs) -> torch.Tensor:
    """Each node's mean of several embeddings (iterate averaging: the last epochs of a run).

    Hyperbolic points are averaged by their Lorentzian centroid: the mean of their hyperboloid
    coordinates, rescaled back onto the hyperboloid (Law et al., ICML 2019); Poincaré points go
    there and back. embs: a sequence of (N, D) tensors of one manifold -> (N, D)."""
    stack = torch.stack([e.detach().to(torch.float64) for e in embs])  # (K, N, D)
    if name == "euclidean":
        return stack.mean(0)
    if name == "poincare":
        stack = lorentz.from_poincare(stack)
    mean = stack.mean(0)
    norm_sq = -lorentz.inner(mean, mean).unsqueeze(-1)  # -<m, m>_L > 0 inside the light cone
    centroid = mean / norm_sq.clamp_min(1e-300).sqrt()
    if name == "poincare":
        return poincare.project(lorentz.to_poincare(centroid))
    return lorentz.project(centroid)


def to_ball(name: str, emb):
    """Coordinates to draw on the Poincaré disk / export for visualisation."""
    return lorentz.to_poincare(emb) if name == "lorentz" else emb
