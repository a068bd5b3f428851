"""Time and peak memory of `data closure` on a random taxonomy.

Usage: .venv/bin/python scripts/bench_closure.py [N] [EXTRA_PARENT_PROB]
Runs the library path the command runs: parse the CSV, drop repeats, close, write.
"""

import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hype import closure as cl  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(n: int, extra_parent_prob: float) -> None:
    edges = cl.random_taxonomy(n, seed=0, extra_parent_prob=extra_parent_prob)
    text = "child,parent\n" + "".join(f"{c},{p}\n" for c, p in edges)
    del edges
    base = peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        parsed, _ = cl.clean_edges(cl.parse_taxonomy(text, "csv"))
        t1 = time.perf_counter()
        closure = cl.transitive_closure(parsed)
        t2 = time.perf_counter()
        with open(Path(tmp) / "out.csv", "w", encoding="utf-8", newline="") as fh:
            cl.write_closure(closure, fh)
        t3 = time.perf_counter()
    nodes, closure_edges = closure.counts()
    print(f"{n:,} nodes, {len(parsed):,} input edges -> {closure_edges:,} closure edges")
    print(f"parse {t1 - t0:.2f}s  close {t2 - t1:.2f}s  write {t3 - t2:.2f}s  "
          f"total {t3 - t0:.2f}s")
    print(f"peak RSS {peak_mib():.0f} MiB ({peak_mib() - base:.0f} MiB above the input text)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
         float(sys.argv[2]) if len(sys.argv) > 2 else 0.1)
