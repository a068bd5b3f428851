"""The geometries. Each module holds free functions with the same names:
distance, project, rgrad, retract, init."""

from types import ModuleType

from hype.manifolds import euclidean, lorentz, poincare

_BY_NAME = {"poincare": poincare, "lorentz": lorentz, "euclidean": euclidean}
# integer ids used by the compiled kernels
KERNEL_ID = {"poincare": 0, "lorentz": 1, "euclidean": 2}


def get(name: str) -> ModuleType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown manifold {name!r} (choose from {', '.join(_BY_NAME)})") from None


def to_ball(name: str, emb):
    """Coordinates to draw on the Poincaré disk / export for visualisation."""
    return lorentz.to_poincare(emb) if name == "lorentz" else emb
