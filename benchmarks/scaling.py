"""Why 2 workers are not 2x here: the machine's own scaling, probe by probe, beside the trainer's.

    .venv/bin/python benchmarks/scaling.py                 # probes, then 1 and 2 workers on the nouns
    .venv/bin/python benchmarks/scaling.py --no-train      # the probes only (about 40 s)

A 2-vCPU VM may give two threads of one physical core (SMT siblings: the guest cannot tell), a
host busy with other guests (steal), or two cores that share one memory path. Each probe runs a
fixed amount of work in 1 process, then in 2 processes at once, and prints 2 x t(1) / t(2):
2.00 means the 2 vCPUs are 2 cores' worth of that work.
- alu: eight independent FMA chains in registers (no memory traffic): SMT siblings or steal
  show here, and nothing else does.
- stream: sums over a private 256 MiB array: the memory bandwidth two cores share.
- rows private / rows shared: an edge-update's memory traffic without its arithmetic, on a
  (nodes, 10) float64 table: read and write rows u and v of a random closure edge and 50 random
  rows. First each process on its own table, then both on one table in shared memory
  (Hogwild, as the ranks share the embedding). Shared below private is the cost of two cores
  writing the same cache lines (the hubs most of all).
Then hype's trainer (benchmarks/throughput.py's measure) with 1 and 2 workers: the wall
speedup, and the CPU-second rate ratio, which factors the speedup into "the ranks got the
cores" (CPU seconds per wall second) and "each CPU second did as much" (the probes' business).
Steal (from /proc/stat) is printed with each figure.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.epoch_clock import sample  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

DIM = 10  # the noun benchmarks' dimension
NEGS = 50  # the noun settings' negatives per edge (throughput.py's default)
STREAM_MB = 256  # far past any L3 a VM shows (so the probe measures memory, not cache)


@numba.njit(cache=False)
def _alu(n: int) -> float:
    # eight chains, so that the FMA units' latency is hidden and throughput is what is measured
    a = np.ones(8)
    for _ in range(n):
        for k in range(8):
            a[k] = a[k] * 0.9999999 + 1e-7
    return a.sum()


@numba.njit(cache=False)
def _stream(x: np.ndarray, passes: int) -> float:
    s = 0.0
    for _ in range(passes):
        for i in range(x.size):
            s += x[i]
    return s


@numba.njit(cache=False)
def _rows(table: np.ndarray, edges: np.ndarray, n: int, negs: int, seed: int) -> float:
    # (nodes, DIM) table, (E, 2) edges: an edge-update's memory pattern without its arithmetic:
    # rows u and v of a random closure edge (v is often a hub, which every process writes) and
    # `negs` uniform rows, each read and written
    np.random.seed(seed)
    for _ in range(n):
        e = np.random.randint(0, edges.shape[0])
        for k in range(negs + 2):
            r = edges[e, 0] if k == 0 else edges[e, 1] if k == 1 else np.random.randint(0, table.shape[0])
            for j in range(table.shape[1]):
                table[r, j] = table[r, j] * 0.999 + 1e-3
    return table[0, 0]


def _steal() -> float:
    return sample([]).steal  # all CPUs' steal seconds so far (epoch_clock reads /proc/stat)


def _steal_share(steal0: float, wall: float) -> float:
    return (_steal() - steal0) / (wall * os.cpu_count())


def _data(probe: str, table: np.ndarray, private: bool):
    """What a probe works on, made before it is timed (filling 256 MiB would be timed too)."""
    if probe == "stream":
        return np.ones(STREAM_MB * 2**20 // 8)
    if probe == "rows":
        return np.ones(table.shape) if private else table
    return None


def _work(probe: str, data, size: float, seed: int, edges) -> None:
    if probe == "alu":
        _alu(int(size))
    elif probe == "stream":
        _stream(data, max(1, int(size)))
    else:
        _rows(data, edges, int(size), NEGS, seed)


def _child(probe, size, seed, table, private, edges, start, done) -> None:
    data = _data(probe, table, private)
    _work(probe, data, size / 100, seed, edges)  # touch the pages and warm the caches first
    start.wait()
    t0 = time.perf_counter()
    _work(probe, data, size, seed, edges)
    done.put(time.perf_counter() - t0)


def timed(probe: str, size: float, procs: int, table: np.ndarray, private: bool,
          edges: np.ndarray) -> tuple[float, float]:
    """(slowest process's seconds for `size` work each, steal as a share of the wall time);
    the rows probe works on `table` (shared by the processes) or, if private, on a copy each."""
    ctx = mp.get_context("fork")  # the compiled probes and the shared table carry over
    start, done = ctx.Barrier(procs + 1), ctx.Queue()
    children = [ctx.Process(target=_child, args=(probe, size, i, table, private, edges, start, done))
                for i in range(procs)]
    for c in children:
        c.start()
    start.wait()
    steal0, t0 = _steal(), time.perf_counter()
    times = [done.get() for _ in children]
    wall = time.perf_counter() - t0
    for c in children:
        c.join()
    return max(times), _steal_share(steal0, wall)


def shared_table(rows: int) -> np.ndarray:
    buf = mmap.mmap(-1, rows * DIM * 8)  # anonymous and shared: both forks write the same pages
    table = np.frombuffer(buf, dtype=np.float64).reshape(rows, DIM)
    table[:] = 1.0
    return table


def probes(edges: np.ndarray, nodes: int, scale: float, repeats: int) -> dict[str, float]:
    """2 x t(1) / t(2) of each probe, the median of `repeats` (1, 2) pairs: a VM's memory path is
    shared with other guests, and one pair can be off by a third."""
    # one call each, so that the compile is not timed
    _alu(10)
    _stream(np.ones(8), 1)
    table = shared_table(nodes)
    _rows(table, edges, 10, NEGS, 0)
    sizes = {"alu": 4e8 * scale, "stream": 12 * scale, "rows": 6e5 * scale}
    out = {}
    for name, probe, private in (("alu", "alu", True), ("stream", "stream", True),
                                 ("rows private", "rows", True), ("rows shared", "rows", False)):
        pairs = [tuple(timed(probe, sizes[probe], procs, table, private, edges) for procs in (1, 2))
                 for _ in range(repeats)]
        ratios = sorted(2 * one[0] / two[0] for one, two in pairs)
        steal = max(max(one[1], two[1]) for one, two in pairs)
        out[name] = statistics.median(ratios)
        print(f"  {name:<13} 1 process {statistics.median(o[0] for o, _ in pairs):6.2f} s, 2 at once "
              f"{statistics.median(t[0] for _, t in pairs):6.2f} s: {out[name]:.2f}x of 2 (pairs "
              f"{ratios[0]:.2f}-{ratios[-1]:.2f}; steal at most {100 * steal:.1f}%)", flush=True)
    return out


def trainer(graph, epochs: int) -> tuple[float, float]:
    from benchmarks.throughput import measure

    runs = {}
    for workers in (1, 2):
        steal0, t0 = _steal(), time.perf_counter()
        runs[workers] = measure(graph, dim=DIM, negs=NEGS, workers=workers, epochs=epochs, seed=0)
        steal = _steal_share(steal0, time.perf_counter() - t0)
        m = runs[workers]
        print(f"  trainer, {workers} worker(s): {m.median:,.0f} edge-updates/s (median of {epochs} "
              f"epochs), {m.cpu_rate:,.0f} per CPU second (steal {100 * steal:.1f}%)", flush=True)
    wall = runs[2].median / runs[1].median
    per_cpu = runs[2].cpu_rate / runs[1].cpu_rate
    print(f"  trainer speedup {wall:.2f}x = CPU seconds per wall second {wall / per_cpu:.2f}x "
          f"(of 2) x work per CPU second {per_cpu:.2f}x", flush=True)
    return wall, per_cpu


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="work per probe (1: about 2 s each)")
    p.add_argument("--repeats", type=int, default=3, help="(1, 2)-process pairs per probe")
    p.add_argument("--epochs", type=int, default=4, help="timed trainer epochs per worker count")
    p.add_argument("--closure", help="edge CSV; default data/noun_closure.csv if present, else synthetic")
    p.add_argument("--synthetic-nodes", type=int, help="a synthetic closure of this many nodes")
    p.add_argument("--no-train", action="store_true", help="the probes only")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), load {os.getloadavg()[0]:.2f}", flush=True)
    from benchmarks.throughput import load

    graph = load(args)  # the nouns if built, else a synthetic closure of their size
    print(f"{graph.path}: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges", flush=True)
    out = probes(graph.edges.astype(np.int64), graph.num_nodes, args.scale, args.repeats)
    if not args.no_train:
        out["trainer"], out["trainer per CPU second"] = trainer(graph, args.epochs)
    return out


if __name__ == "__main__":
    main()
