"""Edge lists in; index arrays, adjacency and negative-sampling weights out.

An edge list is a CSV with a header naming the columns id1, id2 and weight. Each row (u, v)
says that v is related to u (for a transitive closure: v is an ancestor of u). Edges are
directed, as in the original: u's negatives and u's evaluation exclude only u's out-neighbours.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
from collections.abc import Callable, Iterator
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


def check_file(path: str | Path) -> Path:
    """The path, if it names a file; DataError names it if it is missing or a directory.

    Cheap (no read, no heavy import): `cli.py train` calls it before it imports torch and MLflow,
    so a mistyped --dataset is reported at once rather than after seconds of imports.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    return path


def read_text(path: str | Path) -> tuple[bytes, str]:
    """A text file's bytes and its UTF-8 text; a leading BOM (Excel writes one) is dropped.

    DataError names the file: missing, a directory, unreadable, or not UTF-8.
    """
    path = check_file(path)
    try:
        raw = path.read_bytes()
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # utf-8-sig counts from after the BOM; the user's editor counts from the file's start
        at = e.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {at})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def csv_rows(text: str, *, error: Callable[[int, str], Exception],
             delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line, fields) for each row of CSV text, header included; line is where the row starts.

    A field longer than the csv module's limit (131072 characters by default, which this
    leaves as it is) raises error(line, reason): no node name is that long, and the usual
    cause is a quote left open, which runs the field on to the end of the file.
    """
    # newline="" lets quoted names hold any character, line breaks included
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    while True:
        line = reader.line_num + 1  # the row about to be read starts on the next line
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise error(line, _csv_reason(e, line, reader.line_num)) from None
        yield line, row


def _csv_reason(e: csv.Error, line: int, reached: int) -> str:
    if not str(e).startswith("field larger than field limit"):
        return f"not valid CSV ({e})"  # not raised by the default dialect; kept for safety
    reason = (f"a field is longer than {csv.field_size_limit()} characters "
              f"(node names this long are not supported)")
    if reached > line:
        reason += f"; the row runs on to line {reached}: is a quote left open?"
    return reason


def load_edge_csv(path: str | Path) -> Graph:
    """Read and validate an `id1,id2,weight` CSV. Errors name the file and line.

    UTF-8 with or without a BOM; a field may hold at most 131072 characters (see csv_rows).
    """
    raw, text = read_text(path)
    path = Path(path)
    if not text.strip():
        raise DataError(f"{path}:1: empty file, expected a header id1,id2,weight and edges")

    rows = csv_rows(text, error=lambda line, reason: DataError(f"{path}:{line}: {reason}"))
    header = [h.strip() for h in next(rows)[1]]
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
    for lineno, row in rows:
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
