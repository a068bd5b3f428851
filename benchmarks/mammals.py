"""Time to quality on the mammal closure: hype against gensim's PoincareModel, in one invocation.

    .venv/bin/pip install -r benchmarks/requirements-bench.txt   # gensim, the peer (once)
    .venv/bin/python benchmarks/mammals.py                        # hype seeds 0 1 2, gensim seed 0 (~6 min)
    .venv/bin/python benchmarks/mammals.py --no-gensim --curve    # hype only, every evaluation

Both are scored by hype's evaluator (hype.evaluate.reconstruction, exact, all nodes) every
--eval-every epochs. Two clocks, both printed:
  train s  the training passes only, burn-in included (hype: the sum of EpochResult.seconds;
           gensim: its train() calls);
  wall s   from the start of the run, so it also holds the evaluations and gensim's model
           construction. hype's kernels are compiled, or loaded from numba's cache, before
           the clocks start, and that time is printed on its own line.
The hype recipe (the defaults below) was chosen for time to MAP >= 0.97 and mean rank <= 1.09
over seeds 0, 1, 2; see benchmarks/README.md for the search and the curve. gensim runs its
own defaults (lr 0.1, batch 10, burn-in 10 epochs at lr 0.01) with 10 negatives, as it
cannot take 50.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hype.config import TrainConfig  # noqa: E402
from hype.data import Graph, load_edge_csv  # noqa: E402
from hype.evaluate import reconstruction  # noqa: E402
from hype.train import train  # noqa: E402

TARGET_MAP, TARGET_MR = 0.97, 1.09  # issue 2's bar for hype
PEER_MAP = 0.90  # the bar at which hype and gensim are compared


@dataclass(frozen=True)
class Point:
    epoch: int  # epochs trained after burn-in for gensim, all epochs for hype
    train_s: float
    wall_s: float
    map: float
    mean_rank: float


@dataclass(frozen=True)
class Run:
    name: str  # "hype seed 0"
    curve: list  # [Point], one per evaluation


def first_reaching(curve: list, map_min: float, mr_max: float = math.inf) -> Point | None:
    """The first evaluation with MAP >= map_min and mean rank <= mr_max, or None."""
    return next((p for p in curve if p.map >= map_min and p.mean_rank <= mr_max), None)


def hype_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(dim=args.dim, lr=args.lr, negs=args.negs, batch_size=args.batch_size,
                       burnin=args.burnin, burnin_multiplier=args.burnin_multiplier,
                       epochs=args.epochs, eval_every=args.eval_every, workers=args.workers,
                       seed=seed)


class _Recorder:
    """Callbacks for hype.train: one Point per evaluated epoch, on both clocks."""

    def __init__(self, start: float):
        self.start, self.train_s, self.curve = start, 0.0, []

    def on_epoch_end(self, result, state):
        self.train_s += result.seconds
        if result.metrics:
            self.curve.append(Point(result.epoch, self.train_s, time.perf_counter() - self.start,
                                    result.metrics["map"], result.metrics["mean_rank"]))

    def on_checkpoint(self, state):
        return None


def run_hype(graph: Graph, config: TrainConfig) -> Run:
    recorder = _Recorder(time.perf_counter())
    train(graph, config, callbacks=recorder, progress=False)
    return Run(f"hype seed {config.seed}", recorder.curve)


def warm_up(graph: Graph, config: TrainConfig) -> float:
    """Seconds to compile hype's kernels, or load them from numba's cache (one tiny run)."""
    t0 = time.perf_counter()
    train(graph, TrainConfig(**{**config.to_dict(), "epochs": 2, "burnin": 1, "eval_every": 2}),
          progress=False)
    return time.perf_counter() - t0


def run_gensim(graph: Graph, *, dim: int, negs: int, epochs: int, eval_every: int, seed: int) -> Run:
    try:
        from gensim.models.poincare import PoincareModel
    except ImportError:
        sys.exit("gensim is not installed: .venv/bin/pip install -r benchmarks/requirements-bench.txt"
                 " (or pass --no-gensim)")
    start = time.perf_counter()
    relations = [(graph.names[u], graph.names[v]) for u, v in graph.edges.tolist()]
    model = PoincareModel(relations, size=dim, negative=negs, seed=seed, dtype=np.float64)
    train_s, curve, done = 0.0, [], 0
    while done < epochs:
        chunk = min(eval_every, epochs - done)
        t0 = time.perf_counter()
        model.train(epochs=chunk)  # its first call also runs the burn-in epochs
        train_s += time.perf_counter() - t0
        done += chunk
        rows = [model.kv.key_to_index[name] for name in graph.names]  # gensim order -> ours
        r = reconstruction(torch.from_numpy(np.asarray(model.kv.vectors[rows], dtype=np.float64)),
                           graph, "poincare")
        curve.append(Point(done, train_s, time.perf_counter() - start, r.map, r.mean_rank))
    return Run(f"gensim seed {seed}", curve)


def _fmt_point(p: Point | None) -> str:
    return f"{'not reached':>22}" if p is None else f"{p.epoch:>6} {p.train_s:>7.2f} {p.wall_s:>7.2f}"


def report(runs: list, *, curve: bool) -> None:
    """The table: each run's time to MAP 0.90, to hype's target, and to its final evaluation."""
    print(f"{'':16} {'to MAP >= 0.90':>22}   {'to MAP>=0.97 & MR<=1.09':>22}   "
          f"{'final':>22}  {'MAP':>6} {'MR':>6}")
    print(f"{'':16} " + "   ".join([f"{'epoch':>6} {'train s':>7} {'wall s':>7}"] * 3))
    for run in runs:
        final = run.curve[-1]
        print(f"{run.name:16} {_fmt_point(first_reaching(run.curve, PEER_MAP))}   "
              f"{_fmt_point(first_reaching(run.curve, TARGET_MAP, TARGET_MR))}   "
              f"{_fmt_point(final)}  {final.map:6.3f} {final.mean_rank:6.3f}")
    hype = [r for r in runs if r.name.startswith("hype")]
    peers = [r for r in runs if r.name.startswith("gensim")]
    for peer in peers:
        _ratios(hype, peer)
    if curve:
        for run in runs:
            points = " ".join(f"{p.epoch}:{p.map:.3f}/{p.mean_rank:.3f}@{p.train_s:.2f}s"
                              for p in run.curve)
            print(f"curve {run.name} (epoch:MAP/MR@train s): {points}")


def _ratios(hype: list, peer: Run) -> None:
    """gensim's time over hype's (median over hype's seeds), at MAP 0.90 and at gensim's final MAP."""
    final = peer.curve[-1]
    for label, bar, peer_point in (
        (f"MAP >= {PEER_MAP}", PEER_MAP, first_reaching(peer.curve, PEER_MAP)),
        (f"gensim's final MAP {final.map:.3f}", final.map, final),
    ):
        ours = [first_reaching(r.curve, bar) for r in hype]
        if not ours or any(p is None for p in ours):
            print(f"ratio {peer.name} / hype to {label}: n/a (hype did not reach it)")
            continue
        # a peer that never got there ran at least its whole curve: the ratio is a lower bound
        at_least = "" if peer_point is not None else ">= "
        peer_point = peer_point or final
        train_x = peer_point.train_s / statistics.median(p.train_s for p in ours)
        wall_x = peer_point.wall_s / statistics.median(p.wall_s for p in ours)
        note = "" if not at_least else (f" (gensim did not reach it in {final.epoch} epochs, "
                                        f"{final.train_s:.0f} s)")
        print(f"ratio {peer.name} / hype to {label}: {at_least}{train_x:.1f}x on train s, "
              f"{at_least}{wall_x:.1f}x on wall s{note}")


def parse_args(argv: list | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/mammal_closure.csv", help="edge CSV (id1,id2,weight)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="hype seeds")
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--eval-every", type=int, default=10, help="epochs between evaluations (both)")
    p.add_argument("--curve", action="store_true", help="print every evaluation of every run")
    g = p.add_argument_group("hype recipe (defaults: the chosen one)")
    g.add_argument("--epochs", type=int, default=400)
    g.add_argument("--lr", type=float, default=0.6, help="per batch, as the original means it")
    g.add_argument("--batch-size", type=int, default=10, help="per-edge step is lr / batch-size")
    g.add_argument("--burnin", type=int, default=30)
    g.add_argument("--burnin-multiplier", type=float, default=0.1)
    g.add_argument("--negs", type=int, default=50)
    g.add_argument("--workers", type=int, default=1, help="training processes (hype.distributed)")
    g = p.add_argument_group("gensim")
    g.add_argument("--no-gensim", action="store_true", help="skip the peer (gensim not needed)")
    g.add_argument("--gensim-seeds", type=int, nargs="+", default=[0])
    g.add_argument("--gensim-epochs", type=int, default=600,
                   help="after its 10 burn-in epochs (it reaches MAP 0.90 near 500)")
    g.add_argument("--gensim-negs", type=int, default=10)
    return p.parse_args(argv)


def main(argv: list | None = None) -> list:
    args = parse_args(argv)
    graph = load_edge_csv(args.data)
    print(f"{args.data}: {graph.num_nodes} nodes, {graph.num_edges} edges; dim {args.dim}, "
          f"hype: lr {args.lr} / batch {args.batch_size}, burn-in {args.burnin} epochs at "
          f"x{args.burnin_multiplier}, {args.epochs} epochs, {args.negs} negatives, "
          f"{args.workers} worker(s)")
    print(f"hype kernels compiled/loaded in {warm_up(graph, hype_config(args, 0)):.2f} s (not counted)")
    runs = []
    for seed in args.seeds:
        runs.append(run_hype(graph, hype_config(args, seed)))
        print(f"  {runs[-1].name}: final MAP {runs[-1].curve[-1].map:.3f}", flush=True)
    if not args.no_gensim:
        for seed in args.gensim_seeds:
            runs.append(run_gensim(graph, dim=args.dim, negs=args.gensim_negs,
                                   epochs=args.gensim_epochs, eval_every=args.eval_every, seed=seed))
            print(f"  {runs[-1].name}: final MAP {runs[-1].curve[-1].map:.3f}", flush=True)
    report(runs, curve=args.curve)
    return runs


if __name__ == "__main__":
    main()
