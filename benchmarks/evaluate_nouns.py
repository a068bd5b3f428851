"""Exact reconstruction of the whole noun closure: time and peak memory (target: <= 60 s).

    .venv/bin/python benchmarks/evaluate_nouns.py                        # random dim-10 embedding
    .venv/bin/python benchmarks/evaluate_nouns.py --checkpoint checkpoints/RUN/noun.pth

Ranks every node with neighbours (82,114 of 82,115 nouns, 743,086 edges) against all 82,115
nodes with hype.evaluate.reconstruction, `--repeat` times, and prints the median wall time,
the process's peak RSS, and the RSS before the first evaluation (so the evaluator's own share
shows). A random embedding (points spread over the ball) is the slow case: about half of all
nodes are closer than a node's farthest neighbour, so no counting pass can stop early. A
trained embedding (--checkpoint, e.g. benchmarks/nouns.py's final model) is the usual case.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_S = 60.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_embedding(args, graph):
    import torch

    from hype import manifolds

    if args.checkpoint is None:
        gen = torch.Generator().manual_seed(args.seed)
        emb = manifolds.poincare.init(graph.num_nodes, args.dim, scale=args.scale, generator=gen)
        return emb, "poincare", f"random dim-{args.dim} Poincaré embedding (U(-{args.scale}, {args.scale}))"
    from tracker.checkpoints.files import load

    ckpt = load(args.checkpoint)
    index = {str(n): i for i, n in enumerate(ckpt["names"])}
    rows = torch.tensor([index[n] for n in graph.names], dtype=torch.long)
    manifold = ckpt.get("config", {}).get("manifold", "poincare")
    return ckpt["embeddings"].detach()[rows], manifold, f"{args.checkpoint} (epoch {ckpt.get('epoch')})"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=ROOT / "data" / "noun_closure.csv")
    p.add_argument("--checkpoint", type=Path, default=None, help="a trained model (.pth)")
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--scale", type=float, default=0.5, help="random coordinates ~ U(-scale, scale)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk", type=int, default=512)
    args = p.parse_args(argv)

    from nouns import CLOSURE, ensure_closure

    if args.dataset == CLOSURE:
        ensure_closure(CLOSURE)
    from hype.data import load_edge_csv
    from hype.evaluate import reconstruction

    graph = load_edge_csv(args.dataset)
    emb, manifold, what = load_embedding(args, graph)
    # compile (or load numba's cache) on a few rows, so the timings are of the evaluation only
    reconstruction(emb, graph, manifold, nodes=[0, 1, 2], chunk=args.chunk)
    rss_before = peak_rss_mb()
    times, r = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        r = reconstruction(emb, graph, manifold, chunk=args.chunk)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    out = {"what": what, "nodes": r.nodes, "edges": r.edges, "mean_rank": r.mean_rank, "map": r.map,
           "seconds_median": med, "seconds_all": times, "peak_rss_mb": peak_rss_mb(),
           "rss_before_mb": rss_before, "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    print(f"{what} on {args.dataset.name}: {r.nodes:,} nodes, {r.edges:,} edges")
    print(f"mean rank {r.mean_rank:.4f}, MAP {r.map:.4f}")
    print(f"exact evaluation: median {med:.1f} s of {args.repeat} "
          f"({', '.join(f'{t:.1f}' for t in times)}); target <= {TARGET_S:.0f} s: "
          f"{'PASS' if med <= TARGET_S else 'FAIL'}")
    print(f"peak RSS {out['peak_rss_mb']:.0f} MB (before evaluating: {rss_before:.0f} MB); "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return out


if __name__ == "__main__":
    main()
