"""Edge-updates per second of hype's compiled trainer on a noun-sized closure, and peak RSS.

    .venv/bin/python benchmarks/throughput.py                      # dim 10, 50 negatives, 1 and 2 workers
    .venv/bin/python benchmarks/throughput.py --closure data/noun_closure.csv --workers 2

An edge-update is one positive edge with its negatives (sampling included). Epochs run
through hype.train.train as users run them (shuffle, kernel calls, with several workers the
ranks spawned and synchronised by hype.distributed),
after burn-in and without evaluation; the first epoch loads or compiles the kernels and is not
timed. The rate of each epoch is edges / its wall seconds; the median over epochs is printed,
with the best, the CPU-time rate (all ranks' CPU seconds, less sensitive to other load on
the machine) and a ratio to the original poincare-embeddings. That ratio is only as good as the
original's rate it divides by: 41k edge-updates/s was measured on another 2-core AMD EPYC
(Zen 5, 2026-11, issue 6), and on a Zen 3 of our kind the original ran 24k-28k (issue 14), so
the column is labelled with where its divisor came from. Pass --original-rate R with the rate
of the original measured on this machine (its train-nouns.sh settings, 2 Hogwild processes;
the original is not part of this repository) to make it a same-machine ratio. Without --closure it uses
data/noun_closure.csv if present, else a synthetic closure of a random taxonomy with as many
nodes as the noun closure (hype.closure.random_taxonomy; about 900k edges against the nouns'
743k, with deeper and thinner ancestor lists of the same length scale).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.machine import cpu_model  # noqa: E402
from hype import distributed  # noqa: E402
from hype.closure import random_taxonomy, transitive_closure  # noqa: E402
from hype.config import TrainConfig  # noqa: E402
from hype.data import Graph, from_edges, load_edge_csv  # noqa: E402
from hype.train import train  # noqa: E402

ORIGINAL_RATE = 41_000  # edge-updates/s, the original on a Zen 5 EPYC (issue 6): NOT this machine
ORIGINAL_SOURCE = ("41k measured on another machine, in another hour (a 2-vCPU Zen 5 EPYC, "
                   "2026-11-28), not in this run; pass --original-rate")
NOUN_CLOSURE = Path("data/noun_closure.csv")
NOUN_NODES = 82_115


@dataclass(frozen=True)
class Measurement:
    workers: int
    rates: list  # edge-updates/s of each timed epoch (wall clock)
    cpu_rate: float  # edge-updates per CPU second over the timed epochs, all ranks together
    ranks_rss: list  # peak RSS (MiB) of each rank other than 0, i.e. of this process's children

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def synthetic_closure(nodes: int, *, seed: int = 0) -> Graph:
    """The transitive closure of hype.closure.random_taxonomy(nodes) as a Graph."""
    closure = transitive_closure(random_taxonomy(nodes, seed=seed, extra_parent_prob=0.0))
    counts = np.fromiter((len(a) for a in closure.ancestors), dtype=np.int64,
                         count=len(closure.ancestors))
    src = np.repeat(np.arange(len(closure.names)), counts)
    dst = np.concatenate(closure.ancestors).astype(np.int64)
    return from_edges(closure.names, np.stack([src, dst], axis=1),
                      path=f"synthetic random_taxonomy({nodes}, seed={seed})")


class _Timer:
    """Callbacks for hype.train: wall and process CPU seconds of each epoch; stops after `epochs`."""

    def __init__(self, epochs: int):
        self.epochs, self.wall, self.cpu = epochs, [], []
        self._cpu0 = _cpu_seconds()

    def on_epoch_end(self, result, state):
        cpu = _cpu_seconds()
        self.wall.append(result.seconds)
        self.cpu.append(cpu - self._cpu0)  # includes the shuffle, as result.seconds does
        self._cpu0 = cpu
        return "measured" if len(self.wall) >= self.epochs else None

    def on_checkpoint(self, state):
        return None


def measure(graph: Graph, *, dim: int, negs: int, workers: int, epochs: int, seed: int) -> Measurement:
    """Train epochs + 1 epochs (the first untimed) and return the per-epoch rates."""
    config = TrainConfig(dim=dim, negs=negs, workers=workers, burnin=0, lr=1.0, batch_size=50,
                         epochs=10**9, eval_every=10**9, seed=seed)  # stopped by the timer
    timer = _Timer(epochs + 1)
    with distributed.open_group(workers) as group:  # ranks 1.. are spawned here, as by the CLI
        train(graph, config, callbacks=timer, progress=False, group=group)
        ranks_rss = [_proc_mib(pid, "VmHWM") for pid in _child_pids()]
    e = graph.num_edges
    return Measurement(workers, [e / s for s in timer.wall[1:]], e * epochs / sum(timer.cpu[1:]),
                       ranks_rss)


def _child_stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat fields (after the command name) of this process's live children: the
    other ranks (`python -m hype.rank`, started by hype.distributed)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid
            out[int(stat.parent.name)] = fields
    return out


def _child_pids() -> list[int]:
    """The other ranks only (not, e.g., multiprocessing's resource tracker)."""
    def is_rank(pid: int) -> bool:
        try:
            return b"hype.rank" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    return sorted(pid for pid in _child_stats() if is_rank(pid))


def _cpu_seconds() -> float:
    """CPU seconds of this process and its live children (the other ranks), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children = sum(int(f[11]) + int(f[12]) for f in _child_stats().values())  # utime, stime
    return time.process_time() + children / ticks


def _proc_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load(args: argparse.Namespace) -> Graph:
    if args.synthetic_nodes:
        return synthetic_closure(args.synthetic_nodes)
    if args.closure:
        return load_edge_csv(args.closure)
    if NOUN_CLOSURE.exists():
        return load_edge_csv(NOUN_CLOSURE)
    return synthetic_closure(NOUN_NODES)



def report(graph: Graph, results: list, *, dim: int, negs: int, original_rate: float | None = None) -> None:
    rate = original_rate or ORIGINAL_RATE
    source = (f"the original measured here: {rate:,.0f}/s" if original_rate else ORIGINAL_SOURCE)
    print(f"{graph.path}: {graph.num_nodes} nodes, {graph.num_edges} edges; dim {dim}, "
          f"{negs} negatives; {os.cpu_count()} CPUs ({cpu_model()}), load {os.getloadavg()[0]:.2f}")
    print(f"{'workers':>7} {'median/s':>10} {'best/s':>10} {'per CPU s':>10} {'s/epoch':>8} "
          f"{'vs original*':>12}")
    for m in results:
        print(f"{m.workers:>7} {m.median:>10,.0f} {max(m.rates):>10,.0f} {m.cpu_rate:>10,.0f} "
              f"{graph.num_edges / m.median:>8.2f} {m.median / rate:>11.1f}x")
    print(f"* divided by {source}")
    base = next((m for m in results if m.workers == 1), None)
    for m in results:
        if base is not None and m.workers > 1:
            print(f"speedup 1 -> {m.workers} workers: {m.median / base.median:.2f}x (median wall)")
    emb_mib = graph.num_nodes * dim * 8 / 2**20
    print(f"peak RSS {peak_rss_mib():.0f} MiB (the whole process: Python, torch, the graph; "
          f"the embedding itself is {emb_mib:.1f} MiB)")
    for m in results:
        if m.ranks_rss:
            print(f"  with {m.workers} workers, each other rank peaked at "
                  f"{', '.join(f'{r:.0f}' for r in m.ranks_rss)} MiB (its own graph and embedding copy)")


def parse_args(argv: list | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--closure", help=f"edge CSV; default {NOUN_CLOSURE} if present, else synthetic")
    p.add_argument("--synthetic-nodes", type=int,
                   help=f"use a synthetic closure of this many nodes (default when there is no CSV: "
                        f"{NOUN_NODES})")
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--negs", type=int, default=50)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="training process counts")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per worker count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--original-rate", type=float, default=None,
                   help="edge-updates/s of the original measured on this machine (for the ratio)")
    return p.parse_args(argv)


def main(argv: list | None = None) -> list:
    args = parse_args(argv)
    graph = load(args)
    results = [measure(graph, dim=args.dim, negs=args.negs, workers=w, epochs=args.epochs,
                       seed=args.seed) for w in args.workers]
    report(graph, results, dim=args.dim, negs=args.negs, original_rate=args.original_rate)
    return results


if __name__ == "__main__":
    main()
