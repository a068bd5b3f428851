"""Multi-process training with torch.distributed (gloo): the process group and its collectives.

Every rank trains on its share of each epoch's shuffled edges, from a copy of the embedding,
and at the end of the epoch the ranks add up their updates (all_reduce of the deltas, then a
projection back onto the manifold). Only rank 0 evaluates, logs, checkpoints and decides to
stop; the decision is broadcast, so every rank leaves the epoch loop at the same epoch.

Two ways in, one code path:
- `--workers K` on one machine: this process is rank 0 and spawns ranks 1..K-1 (local_group).
- `torchrun` on one or many machines: torchrun starts every rank with RANK / WORLD_SIZE /
  MASTER_ADDR / MASTER_PORT set (from_env). Ranks other than 0 only need the process group:
  rank 0 sends them the graph, config and starting embedding.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hype import manifolds

BACKEND = "gloo"  # CPU collectives; the embedding lives in host memory
# A rank waits this long in a collective, e.g. while rank 0 evaluates all nouns or retries an
# unreachable tracking store (its retry policy gives up after 60 s), before giving up.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    rank: int  # 0 logs, checkpoints and decides; the others only train
    world: int  # number of ranks (--workers)

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of the epoch's edge order (the same on every rank)."""
        return np.array_split(order, self.world)[self.rank]

    def sync(self, emb: np.ndarray, start: np.ndarray, manifold: str) -> None:
        """emb <- start + sum over ranks of (emb_r - start), projected; emb (N, D) in place.
        Adding the updates (not averaging them) keeps each edge's step the size it has with
        one process, as with Hogwild on shared memory."""
        delta = torch.from_numpy(emb - start)  # (N, D)
        dist.all_reduce(delta, op=dist.ReduceOp.SUM)
        merged = manifolds.get(manifold).project(torch.from_numpy(start) + delta)
        emb[:] = merged.numpy()

    def total(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def agree_stop(self, stop: bool) -> bool:
        """Rank 0's decision, the same on every rank."""
        t = torch.tensor([int(stop)], dtype=torch.int64)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def send_start(self, payload: object) -> None:
        """Rank 0: the graph, config, embedding and epoch the ranks start from."""
        dist.broadcast_object_list([payload], src=0)

    def receive_start(self) -> object:
        box = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def from_env() -> Group:
    """The group torchrun (or any launcher setting the env:// variables) started."""
    dist.init_process_group(BACKEND, init_method="env://", timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size())


def destroy() -> None:
    dist.destroy_process_group()


@contextmanager
def open_group(workers: int):
    """None for one process; torchrun's group when it launched us; else a local one of `workers`."""
    if launched_by_torchrun():
        group = from_env()
        try:
            yield group
        finally:
            destroy()
    elif workers > 1:
        with local_group(workers) as group:
            yield group
    else:
        yield None


@contextmanager
def local_group(workers: int):
    """This process is rank 0; ranks 1..workers-1 are spawned (fresh interpreters: no fork of
    torch's or numba's threads) and killed when the block exits, however it exits."""
    from hype.train import train_worker  # the worker's epoch loop lives with rank 0's

    with tempfile.TemporaryDirectory(prefix="hype-gloo-") as tmp:
        init = (Path(tmp) / "rendezvous").as_uri()  # file rendezvous: no port to choose
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_spawned, args=(train_worker, rank, workers, init), daemon=True,
                             name=f"hype-rank{rank}") for rank in range(1, workers)]
        for p in procs:
            p.start()
        try:
            dist.init_process_group(BACKEND, init_method=init, rank=0, world_size=workers,
                                    timeout=TIMEOUT)
            try:
                yield Group(0, workers)
            finally:
                dist.destroy_process_group()
            for p in procs:
                p.join(timeout=30)
        finally:
            for p in procs:  # still alive: rank 0 failed or was interrupted mid-epoch
                if p.is_alive():
                    p.kill()
                    p.join()


def _spawned(worker_loop, rank: int, world: int, init: str) -> None:
    # Ctrl+C reaches the whole terminal's process group: rank 0 handles it and stops the ranks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dist.init_process_group(BACKEND, init_method=init, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        worker_loop(Group(rank, world))
    finally:
        dist.destroy_process_group()
