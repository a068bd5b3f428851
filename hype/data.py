"""Edge lists in; index arrays, adjacency and negative-sampling weights out.

An edge list is a CSV with a header naming the columns id1, id2 and weight. Each row (u, v)
says that v is related to u (for a transitive closure: v is an ancestor of u). Edges are
directed, as in the original: u's negatives and u's evaluation exclude only u's out-neighbours.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED_COLUMNS = ("id1", "id2", "weight")


class DataError(ValueError):
    """A malformed edge list; the message names the file and the line."""


@dataclass(frozen=True)
class Graph:
    names: list[str]  # node index -> name, sorted so that indices do not depend on row order
    edges: np.ndarray  # (E, 2) int64: (u, v) pairs, unique, sorted
    weights: np.ndarray  # (E,) float64
    indptr: np.ndarray  # (N + 1,) int64: CSR over u; out-neighbours of u are indices[indptr[u]:indptr[u+1]]
    indices: np.ndarray  # (E,) int64, sorted within each row (binary search in the kernels)
    path: str = ""  # where it was read from
    sha256: str = ""  # of the file's bytes, logged with every run

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def degree(self) -> np.ndarray:
        """(N,) count of edges each node takes part in, at either end."""
        n = self.num_nodes
        return np.bincount(self.edges[:, 0], minlength=n) + np.bincount(self.edges[:, 1], minlength=n)


def from_edges(names: list[str], edges: np.ndarray, weights: np.ndarray | None = None,
               *, path: str = "", sha256: str = "") -> Graph:
    """Build a Graph from index pairs: dedupes and sorts, and builds the CSR adjacency."""
    n = len(names)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if weights is None:
        weights = np.ones(len(edges))
    keys = edges[:, 0] * n + edges[:, 1]
    keys, first = np.unique(keys, return_index=True)  # sorted by (u, v)
    edges = np.stack([keys // n, keys % n], axis=1)
    weights = np.asarray(weights, dtype=np.float64)[first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(edges[:, 0], minlength=n), out=indptr[1:])
    return Graph(names, edges, weights, indptr, edges[:, 1].copy(), path, sha256)


def load_edge_csv(path: str | Path) -> Graph:
    """Read and validate an `id1,id2,weight` CSV. Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an edge-list CSV")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not text.strip():
        raise DataError(f"{path}:1: empty file, expected a header id1,id2,weight and edges")

    # newline="" lets quoted names hold any character, line breaks included
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: missing column(s) {', '.join(missing)} (header is {','.join(header)!r}; "
            f"expected {','.join(REQUIRED_COLUMNS)})"
        )
    i1, i2, iw = (header.index(c) for c in REQUIRED_COLUMNS)
    width = len(header)

    index: dict[str, int] = {}
    us, vs, ws = [], [], []
    for row in reader:
        lineno = reader.line_num
        if not row:
            continue  # blank line
        if len(row) != width:
            raise DataError(f"{path}:{lineno}: expected {width} fields, got {len(row)}")
        u, v, w = row[i1], row[i2], row[iw]
        if not u or not v:
            raise DataError(f"{path}:{lineno}: empty node id")
        if u == v:
            raise DataError(f"{path}:{lineno}: self-loop {u!r} -> {v!r}")
        try:
            weight = float(w)
        except ValueError:
            raise DataError(f"{path}:{lineno}: weight {w!r} is not a number") from None
        if not math.isfinite(weight):
            raise DataError(f"{path}:{lineno}: weight {w!r} is not finite")
        us.append(index.setdefault(u, len(index)))
        vs.append(index.setdefault(v, len(index)))
        ws.append(weight)
    if not us:
        raise DataError(f"{path}:2: no edges after the header")

    # Renumber by sorted name so that node indices do not depend on row order.
    order = sorted(index, key=index.__getitem__)
    names = sorted(order)
    position = {name: i for i, name in enumerate(names)}
    rank = np.array([position[name] for name in order], dtype=np.int64)  # old index -> new
    edges = rank[np.stack([np.array(us), np.array(vs)], axis=1)]
    return from_edges(names, edges, np.array(ws), path=str(path),
                      sha256=hashlib.sha256(raw).hexdigest())
