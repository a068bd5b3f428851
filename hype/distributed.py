"""Multi-process training with torch.distributed (gloo): the process group, the shared
embedding and the collectives.

Ranks on one host are Hogwild workers, as in the original: they update one embedding in shared
memory (/dev/shm) without locks, each on its own share of every epoch's shuffled edges. Ranks on
different hosts (torchrun nodes) cannot share memory: each host keeps its own copy, and a few
times per epoch (TrainConfig.syncs) the hosts add up their updates (all_reduce of the deltas,
then a projection back onto the manifold). Only rank 0 evaluates, logs, checkpoints and decides
to stop. The decision is broadcast, so every rank leaves the epoch loop at the same epoch.

Two ways in, one code path:
- `--workers K` on one machine: this process is rank 0 and starts ranks 1..K-1 as
  `python -m hype.rank` processes (local_group).
- `torchrun` on one or many machines: torchrun starts every rank with RANK / WORLD_SIZE /
  MASTER_ADDR / MASTER_PORT set (from_env). Ranks other than 0 only need the process group:
  rank 0 sends them the graph, config and starting embedding.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hype import manifolds, processes

BACKEND = "gloo"  # CPU collectives; the embedding lives in host memory
# A rank waits this long in a collective, e.g. while rank 0 evaluates all nouns or retries an
# unreachable tracking store (its retry policy gives up after 60 s), before giving up.
TIMEOUT = timedelta(minutes=30)


@dataclass
class Group:
    rank: int  # 0 logs, checkpoints and decides; the others only train
    world: int  # number of ranks (--workers)
    hosts: int = 1  # hosts with their own copy of the embedding; 1: nothing to merge
    leader: bool = True  # lowest rank on its host: creates the host's copy, merges for it
    local: int = 1  # ranks on this rank's host (sharing its cores and its copy)
    _shm: shared_memory.SharedMemory | None = field(default=None, repr=False)

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of the epoch's edge order (the same on every rank)."""
        return np.array_split(order, self.world)[self.rank]

    def share(self, emb: np.ndarray, token: str) -> np.ndarray:
        """Collective: the (N, D) array this rank trains, in its host's shared memory, holding
        `emb` (the starting values, the same on every rank); `token` names this run's segments."""
        hosts = [None] * self.world
        dist.all_gather_object(hosts, host_id())
        self.hosts = len(set(hosts))
        self.local = hosts.count(hosts[self.rank])
        leader = min(r for r, h in enumerate(hosts) if h == hosts[self.rank])
        self.leader = leader == self.rank
        name = f"hype-{token}-{leader}"
        if self.leader:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=max(emb.nbytes, 1))
        dist.barrier()  # every host's segment exists
        if not self.leader:
            self._shm = shared_memory.SharedMemory(name=name)
            # Python registers an attached segment with this process's resource tracker too,
            # which would remove it when this rank exits; the leader owns it.
            resource_tracker.unregister(self._shm._name, "shared_memory")
        view = np.ndarray(emb.shape, dtype=np.float64, buffer=self._shm.buf)
        if self.leader:
            view[:] = emb
        dist.barrier()  # every copy holds the starting values
        return view

    def snapshot(self, emb: np.ndarray) -> np.ndarray | None:
        """Collective, across hosts: the leader's copy of its host's (N, D) embedding, taken
        while no rank of the host writes it (None on other ranks)."""
        dist.barrier()
        start = emb.copy() if self.leader else None
        dist.barrier()
        return start

    def merge(self, emb: np.ndarray, start: np.ndarray | None, manifold: str) -> None:
        """Collective, across hosts: every host's copy <- start + the sum of the hosts' updates
        since `start`, projected. Ranks other than the leaders add zeros and wait."""
        dist.barrier()  # this host's ranks are done writing
        delta = emb - start if self.leader else np.zeros(emb.shape)  # (N, D)
        total = torch.from_numpy(delta)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        if self.leader:
            emb[:] = manifolds.get(manifold).project(torch.from_numpy(start) + total).numpy()
        dist.barrier()  # nobody trains on the copy while its leader rewrites it

    def total(self, value: float) -> float:
        """Sum over ranks; also the end-of-epoch barrier (every rank has finished its share)."""
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

    def release(self) -> None:
        """Unmap this rank's shared embedding; the leader also removes it."""
        if self._shm is None:
            return
        if self.leader:
            self._shm.unlink()
        try:
            self._shm.close()
        except BufferError:  # an array still views it: it is unmapped when that one goes
            pass
        self._shm = None


def host_id() -> str:
    """Ranks with the same id share memory. torchrun's node rank is part of it, so that the
    nodes of a multi-node job stay separate even when two of them run on one machine."""
    return f"{socket.gethostname()}/{os.environ.get('GROUP_RANK', '0')}"


def new_token() -> str:
    return secrets.token_hex(6)


def from_env() -> Group:
    """The group torchrun (or any launcher setting the env:// variables) started."""
    dist.init_process_group(BACKEND, init_method="env://", timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size())


def close(group: Group) -> None:
    group.release()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def open_group(workers: int):
    """None for one process; torchrun's group when it launched us; else a local one of `workers`."""
    if processes.launched_by_torchrun():
        group = from_env()
        try:
            yield group
        finally:
            close(group)
    elif workers > 1:
        with local_group(workers) as group:
            yield group
    else:
        yield None


START_TIMEOUT_S = 300.0  # a rank imports torch and numba before it is ready: seconds, not minutes


class WorkerStartError(RuntimeError):
    pass


def ready_file(folder: Path, rank: int) -> Path:
    """Written by a rank once it is imported and about to join the group (see hype.rank)."""
    return folder / f"ready.{rank}"


def _wait_ready(procs: list, folder: Path) -> None:
    """Rank 0 joins the group only once every rank is up: the rendezvous itself would wait
    TIMEOUT (30 min) for a rank that died while starting."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for rank, p in enumerate(procs, start=1):
        while not ready_file(folder, rank).exists():
            if p.poll() is not None:
                raise WorkerStartError(f"worker rank {rank} exited with code {p.returncode} "
                                       "before training started (its error is above)")
            if time.monotonic() > deadline:
                raise WorkerStartError(f"worker rank {rank} did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)


@contextmanager
def local_group(workers: int):
    """This process is rank 0; ranks 1..workers-1 run `python -m hype.rank` (fresh
    interpreters: nothing of the caller's main module is re-imported, no fork of torch's or
    numba's threads) and are killed when the block exits, however it exits."""
    with tempfile.TemporaryDirectory(prefix="hype-gloo-") as tmp:
        init = (Path(tmp) / "rendezvous").as_uri()  # file rendezvous: no port to choose
        env = processes.module_env()
        procs = [subprocess.Popen(processes.module_command("hype.rank", init, str(rank),
                                                           str(workers)),
                                  env=env, start_new_session=True)  # Ctrl+C is rank 0's to handle
                 for rank in range(1, workers)]
        group = None
        try:
            _wait_ready(procs, Path(tmp))
            dist.init_process_group(BACKEND, init_method=init, rank=0, world_size=workers,
                                    timeout=TIMEOUT)
            group = Group(0, workers)
            try:
                yield group
            finally:
                close(group)
            for p in procs:  # they leave the epoch loop with rank 0; give them time to exit
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass  # killed below: training is over either way
        finally:
            for p in procs:  # still running: rank 0 failed or was interrupted mid-epoch
                if p.poll() is None:
                    p.kill()
                    p.wait()
