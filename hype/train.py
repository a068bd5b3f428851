"""The epoch loop. It knows nothing of MLflow: tracking attaches through callbacks.

Epochs are numbered from 1; epoch e is a burn-in epoch when e <= config.burnin. Everything
random in epoch e derives from (seed, e, rank), so a run resumed from the checkpoint of
epoch e continues exactly as the uninterrupted run would have. With several workers
(hype.distributed), rank 0 runs train() and the other ranks run train_worker(): the same
epochs and collectives, without evaluation or callbacks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from hype import distributed, kernels, manifolds, node_names, processes
from hype.config import TrainConfig
from hype.data import Graph
from hype.distributed import Group
from hype.evaluate import reconstruction, sample_nodes
from hype.model import edge_loss, init_embedding, sample_negatives_batch
from hype.optim import RiemannianSGD
from hype.progress import bar as progress_bar

CHECKPOINT_FORMAT = 2  # bump when the checkpoint dict changes (2: names as one byte tensor)


@dataclass
class TrainState:
    emb: torch.Tensor  # (N, D) float64, the live embedding (rank 0's copy with several workers)
    epoch: int  # epochs completed
    config: TrainConfig
    names: list[str]
    _names_blob: object = field(default=None, repr=False)  # node_names.encode(names), made once

    def checkpoint(self) -> dict:
        """Everything needed to resume, as tensors and plain types (loads with weights_only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "embeddings": self.emb.detach().clone(),
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "names": self._encoded_names(),
            # The optimiser (plain RSGD) has no moments; its state is the schedule position.
            "optimizer": {"lr": self.config.lr_at(self.epoch), "step": self.epoch},
            # All randomness of epoch e is derived from (seed, e): these are the RNG states.
            "rng": {"seed": self.config.seed, "next_epoch": self.epoch + 1,
                    "torch": torch.get_rng_state()},
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TrainState:
        torch.set_rng_state(ckpt["rng"]["torch"])
        return cls(ckpt["embeddings"].to(torch.float64).contiguous(), int(ckpt["epoch"]),
                   TrainConfig.from_dict(ckpt["config"]), node_names.decode(ckpt["names"]))

    def _encoded_names(self):
        # names never change during a run: encode them once, not at every epoch's checkpoint
        if self._names_blob is None:
            self._names_blob = node_names.encode(self.names)
        return self._names_blob


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float  # mean loss per edge
    lr: float  # per-batch learning rate used in this epoch
    seconds: float  # wall time of the training pass (without evaluation)
    metrics: dict = field(default_factory=dict)  # mean_rank, map / map_sampled when evaluated
    burnin: bool = False


class Callbacks(Protocol):
    def on_epoch_end(self, result: EpochResult, state: TrainState) -> str | None:
        """Called after each epoch; return a reason to stop after this epoch, or None."""

    def on_checkpoint(self, state: TrainState) -> None:
        """Called after on_epoch_end with the state to persist."""


class NoCallbacks:
    def on_epoch_end(self, result, state):
        return None

    def on_checkpoint(self, state):
        return None


@dataclass(frozen=True)
class TrainResult:
    state: TrainState
    history: list  # [EpochResult] of this invocation
    stop_reason: str | None


def new_state(graph: Graph, config: TrainConfig) -> TrainState:
    emb = init_embedding(graph.num_nodes, config.dim, config.manifold,
                         scale=config.init_scale, seed=config.seed)
    return TrainState(emb, 0, config, list(graph.names))


def check_compatible(state: TrainState, graph: Graph, config: TrainConfig) -> None:
    """A resumed checkpoint must match the data and geometry: say what differs."""
    if state.names != list(graph.names):
        raise ValueError(
            f"checkpoint has {len(state.names)} nodes that do not match the dataset's "
            f"{graph.num_nodes}: it was trained on other data"
        )
    for key in ("manifold", "dim"):
        if getattr(state.config, key) != getattr(config, key):
            raise ValueError(f"checkpoint has {key}={getattr(state.config, key)!r}, "
                             f"the run asks for {key}={getattr(config, key)!r}")
    if tuple(state.emb.shape) != (graph.num_nodes, config.ambient_dim):
        raise ValueError(f"checkpoint embedding has shape {tuple(state.emb.shape)}, expected "
                         f"{(graph.num_nodes, config.ambient_dim)}")


def burnin_cdf(graph: Graph, dampening: float) -> np.ndarray:
    """(N,) cumulative weights degree ** dampening for burn-in negatives."""
    return np.cumsum(graph.degree().astype(np.float64) ** dampening)


def evaluate(state: TrainState, graph: Graph, sample: np.ndarray | None) -> dict:
    if sample is not None:
        r = reconstruction(state.emb, graph, state.config.manifold, nodes=sample)
        return {"mean_rank_sampled": float(r.mean_rank), "map_sampled": float(r.map)}
    r = reconstruction(state.emb, graph, state.config.manifold)
    return {"mean_rank": float(r.mean_rank), "map": float(r.map)}


def train(graph: Graph, config: TrainConfig, *, state: TrainState | None = None,
          callbacks: Callbacks | None = None, progress: bool = True,
          group: Group | None = None) -> TrainResult:
    """Train from `state` (a fresh one when None) up to config.epochs. With config.workers > 1
    (or under torchrun) this process is rank 0 of `group`, opened here when not given."""
    if group is None and (config.workers > 1 or processes.launched_by_torchrun()):
        with distributed.open_group(config.workers) as group:
            return train(graph, config, state=state, callbacks=callbacks, progress=progress,
                         group=group)
    callbacks = callbacks or NoCallbacks()
    state = state or new_state(graph, config)
    state.config = config
    if group is not None:
        token = distributed.new_token()
        group.send_start((graph, config.to_dict(), state.emb.numpy(), state.epoch, token))
        state.emb = torch.from_numpy(group.share(state.emb.numpy(), token))  # Hogwild from here
        try:
            with _rank_threads(group):
                return _train_loop(graph, config, state, callbacks, progress, group)
        finally:
            state.emb = state.emb.clone()  # the shared copy goes away with the group
    return _train_loop(graph, config, state, callbacks, progress, None)


def _train_loop(graph, config, state, callbacks, progress, group) -> TrainResult:
    sample = (sample_nodes(graph, config.eval_sample, seed=config.seed)
              if config.eval_sample else None)
    cdf = burnin_cdf(graph, config.dampening)
    run_epoch = _numba_epoch if config.backend == "numba" else _torch_epoch
    history, stop_reason = [], None
    # in a log: a line every 10 s, at every 10% of the epochs, and at the last one run
    bar = progress_bar(total=config.epochs, initial=state.epoch, desc="train", unit="epoch",
                       label="epoch", enabled=progress, every_fraction=0.1, last_line=True,
                       dynamic_ncols=True)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        burnin = epoch <= config.burnin
        lr = config.lr_at(epoch - 1)
        t0 = time.perf_counter()
        loss = run_epoch(state, graph, epoch, lr, cdf if burnin else np.empty(0), group)
        seconds = time.perf_counter() - t0
        metrics = {}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            metrics = evaluate(state, graph, sample)
        state.epoch = epoch
        result = EpochResult(epoch, loss, lr, seconds, metrics, burnin)
        history.append(result)
        bar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.3f}" for k, v in metrics.items()},
                        refresh=False)
        stop_reason = callbacks.on_epoch_end(result, state)
        callbacks.on_checkpoint(state)
        bar.update()  # before a stop: the bar and a log's last line count this epoch
        if group is not None:
            group.agree_stop(bool(stop_reason))  # the other ranks leave at this epoch too
        if stop_reason:
            break
    bar.close()
    return TrainResult(state, history, stop_reason)


def train_worker(group: Group) -> None:
    """A rank other than 0: rank 0's epochs, on this rank's share of the edges, until told to stop."""
    graph, config, emb, done, token = group.receive_start()
    config = TrainConfig.from_dict(config)
    state = TrainState(torch.from_numpy(group.share(emb, token)), done, config, [])
    cdf = burnin_cdf(graph, config.dampening)
    with _rank_threads(group):
        for epoch in range(done + 1, config.epochs + 1):
            burnin = epoch <= config.burnin
            _numba_epoch(state, graph, epoch, config.lr_at(epoch - 1), cdf if burnin else np.empty(0),
                         group)
            if group.agree_stop(False):
                return


@contextmanager
def _rank_threads(group: Group):
    """torch's intra-op threads as processes.torch_threads says for this host's ranks, and back."""
    threads = processes.torch_threads(group.local, processes.usable_cores())
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _epoch_seed(config: TrainConfig, epoch: int, worker: int = 0) -> int:
    return (config.seed * 1_000_003 + epoch * 7_919 + worker) % (2**32)


def _numba_epoch(state, graph, epoch, lr, cdf, group=None) -> float:
    config = state.config
    order = np.random.default_rng([config.seed, epoch]).permutation(graph.num_edges)
    emb = state.emb.numpy()  # shares memory with the tensor: updated in place
    mid = manifolds.KERNEL_ID[config.manifold]
    step = lr / config.batch_size  # the original averages the loss over a batch: see README
    seed = _epoch_seed(config, epoch, 0 if group is None else group.rank)

    def run(part: np.ndarray, seed: int) -> float:
        return kernels.train_edges(emb, mid, graph.edges, part, graph.indptr, graph.indices,
                                   cdf, config.negs, step, seed)

    if group is None:
        return run(order, seed) / graph.num_edges
    part = group.shard(order)
    if group.hosts == 1:  # Hogwild: every rank writes the one shared copy
        total = run(part, seed)
    else:
        total = 0.0
        for i, chunk in enumerate(np.array_split(part, config.syncs)):  # hosts merge between chunks
            start = group.snapshot(emb)
            total += run(chunk, seed + 7 * i)
            group.merge(emb, start, config.manifold)
    return group.total(total) / graph.num_edges  # also the barrier before rank 0 evaluates


def _torch_epoch(state, graph, epoch, lr, cdf, group=None) -> float:
    """Batched autograd reference: the loss is averaged over each batch, as in the original."""
    config = state.config
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(graph.num_edges)
    n = graph.num_nodes
    keys = graph.edges[:, 0] * n + graph.edges[:, 1]  # sorted, as Graph keeps edges sorted
    weights = np.diff(cdf, prepend=0.0) if len(cdf) else None
    emb = state.emb.requires_grad_(True)
    opt = RiemannianSGD(emb, manifold=config.manifold, lr=lr)
    total = 0.0
    for start in range(0, len(order), config.batch_size):
        batch = graph.edges[order[start:start + config.batch_size]]
        targets = sample_negatives_batch(batch[:, 0], batch[:, 1], config.negs, n, keys, rng,
                                         weights)
        u = torch.nn.functional.embedding(torch.from_numpy(batch[:, 0]), emb, sparse=True)
        t = torch.nn.functional.embedding(torch.from_numpy(targets), emb, sparse=True)
        loss = edge_loss(u, t, config.manifold)
        loss.mean().backward()
        opt.step()
        total += float(loss.detach().sum())
    state.emb = emb.detach()
    return total / graph.num_edges
