"""Training settings. Defaults follow the original's train-mammals.sh unless a comment says otherwise.

The defaults are the best recipe measured on the bundled mammals with early stopping after 6
epochs without a new best MAP (the seed's "patience 6 epochs", evaluating every epoch): MAP
0.978-0.979 and mean rank 1.064-1.072 over seeds 0-2, stopping at epochs 208-242 (docs/recipe.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MANIFOLDS = ("poincare", "lorentz", "euclidean")
BACKENDS = ("numba", "torch")


@dataclass(frozen=True)
class TrainConfig:
    manifold: str = "poincare"  # geometry: poincare ball, lorentz hyperboloid, or euclidean baseline
    dim: int = 5  # embedding dimension (lorentz stores dim + 1 ambient coordinates)
    # learning rate per batch of `batch_size`, as the original means it (per-edge step lr / batch);
    # the original's 0.3 is slower, and 1.0 or more gains MAP sooner but ends at MR 1.10-1.15
    lr: float = 0.6
    # negatives per positive edge, drawn among non-neighbours of u; the original's 50 gives a
    # noisier MAP, so early stopping after 6 epochs ends too soon (0.962 at epoch 198)
    negs: int = 100
    batch_size: int = 10  # edges per batch; the loss is averaged over it, so the per-edge step is lr/batch
    burnin: int = 30  # first epochs run at lr * burnin_multiplier with degree-weighted negatives (20)
    burnin_multiplier: float = 0.1  # lr factor during burn-in (the original's 0.01 barely moves)
    dampening: float = 0.75  # burn-in negatives ~ degree ** dampening
    epochs: int = 300  # maximum number of epochs (early stopping may end sooner)
    seed: int = 0  # seeds init, shuffling and negatives; a run is reproducible for seed + workers
    init_scale: float = 1e-3  # initial coordinates ~ U(-init_scale, init_scale), near the origin
    # evaluate reconstruction every this many epochs (and at the last one): every epoch, so that
    # patience counts epochs; exact on small graphs (mammals: 1,180 nodes, milliseconds)
    eval_every: int = 1
    eval_sample: int = 0  # if > 0, evaluate during training on this many seeded nodes (map_sampled)
    backend: str = "numba"  # numba: compiled per-edge CPU kernel; torch: batched autograd reference
    workers: int = 1  # training processes (torch.distributed, gloo); an epoch is still one pass
    # Ranks on one host share the embedding (Hogwild). Ranks on different torchrun nodes each
    # have a copy, and the nodes add up their updates this often per epoch.
    syncs: int = 4

    def __post_init__(self) -> None:
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"Invalid manifold: {self.manifold!r} (choose from {', '.join(MANIFOLDS)})")
        if self.backend not in BACKENDS:
            raise ValueError(f"Invalid backend: {self.backend!r} (choose from {', '.join(BACKENDS)})")
        _positive("dim", self.dim)
        _positive("lr", self.lr)
        _positive("negs", self.negs)
        _positive("batch_size", self.batch_size)
        _positive("epochs", self.epochs)
        _positive("eval_every", self.eval_every)
        _positive("workers", self.workers)
        _positive("syncs", self.syncs)
        _positive("init_scale", self.init_scale)
        _non_negative("burnin", self.burnin)
        _non_negative("seed", self.seed)
        if self.workers > 1 and self.backend != "numba":
            raise ValueError(f"Invalid workers: {self.workers} with backend {self.backend!r} "
                             "(several workers need the numba backend)")
        _non_negative("eval_sample", self.eval_sample)
        if not 0 < self.burnin_multiplier <= 1:
            raise ValueError(
                f"Invalid burnin_multiplier: {self.burnin_multiplier} (expected 0 < x <= 1)"
            )
        if not 0 <= self.dampening <= 1:
            raise ValueError(f"Invalid dampening: {self.dampening} (expected 0 <= x <= 1)")

    @property
    def ambient_dim(self) -> int:
        """Columns stored per node: the hyperboloid lives in R^(dim+1)."""
        return self.dim + 1 if self.manifold == "lorentz" else self.dim

    def lr_at(self, epoch: int) -> float:
        """Per-batch learning rate of `epoch` (0-based): divided during burn-in."""
        return self.lr * self.burnin_multiplier if epoch < self.burnin else self.lr

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a (possibly stringly-typed, e.g. MLflow params) dict, ignoring unknown keys."""
        out = {}
        for f in fields(cls):
            if f.name in d:
                typ = {"int": int, "float": float, "str": str}[str(f.type)]
                out[f.name] = typ(d[f.name])
        return cls(**out)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"Invalid {name}: {value} (must be > 0)")
    if value == float("inf"):
        raise ValueError(f"Invalid {name}: {value} (must be finite)")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"Invalid {name}: {value} (must be >= 0)")


# Above this many nodes, `train` evaluates on a seeded sample during training unless told
# (--eval-sample): exact evaluation is O(N^2), 8 s per epoch on the 82,115 nouns.
SAMPLE_ABOVE_NODES = 20_000
AUTO_SAMPLE = 2_000  # nodes in that sample; the exact figures come at the end


def auto_eval_sample(num_nodes: int) -> int:
    return AUTO_SAMPLE if num_nodes > SAMPLE_ABOVE_NODES else 0
