"""Parent-child lists in, `id1,id2,weight` transitive closures out.

A taxonomy is a list of (child, parent) edges; it may be a DAG (several parents per
node). Its closure maps every node to the set of its ancestors. Everything here is
pure: parsing takes text, formatting returns text, and the command does the file I/O.
"""

import bisect
import csv
import difflib
import hashlib
import io
import json
import random
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TextIO

import numpy as np

from hype.data import csv_rows

Edge = tuple[str, str]  # (child, parent), or (descendant, ancestor) in a closure

HEADER = "id1,id2,weight"
FORMATS = ("csv", "tsv", "json")

# The training loader splits its input with str.splitlines(), which breaks a line on
# all of these, even inside a quoted field; a name holding one could not round-trip.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


class TaxonomyError(ValueError):
    """Input that cannot be turned into a closure; the message names what is wrong."""


class CycleError(TaxonomyError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle  # [a, b, ..., a]: each node's next entry is one of its parents
        path = " -> ".join(repr(n) for n in cycle)
        super().__init__(f"the taxonomy has a cycle (child -> parent): {path}")


@dataclass(frozen=True)
class Dropped:
    """What clean_edges() removed, with a few examples of each."""

    duplicates: int
    duplicate_examples: tuple[Edge, ...]
    self_loops: int
    self_loop_examples: tuple[str, ...]


# --- parsing ---------------------------------------------------------------------------


def detect_format(name: str, text: str) -> str:
    """csv, tsv or json: by file extension, else by sniffing the first line."""
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix in ("csv", "tsv", "json"):
        return suffix
    if suffix == "tab":
        return "tsv"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "json"
    first_line = stripped.split("\n", 1)[0]
    return "tsv" if "\t" in first_line else "csv"


def parse_table(
    text: str, *, delimiter: str = ",", child_column: str = "child", parent_column: str = "parent"
) -> list[Edge]:
    """(child, parent) edges from a CSV/TSV with a header row; other columns are ignored."""
    rows = csv_rows(text, delimiter=delimiter,
                    error=lambda line, reason: TaxonomyError(f"line {line}: {reason}"))
    _, header = next(rows, (1, None))
    if header is None or not any(h.strip() for h in header):
        raise TaxonomyError("empty input: expected a header row and (child, parent) rows")
    header = [h.strip() for h in header]
    missing = [c for c in (child_column, parent_column) if c not in header]
    if missing:
        raise TaxonomyError(
            f"no column {' or '.join(map(repr, missing))} in the header; columns are "
            f"{', '.join(map(repr, header))} (choose with --child-column/--parent-column)"
        )
    ci, pi = header.index(child_column), header.index(parent_column)
    edges = []
    for line, row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) <= max(ci, pi):
            raise TaxonomyError(f"line {line}: {len(row)} field(s), expected {len(header)}")
        edges.append(_checked(row[ci], row[pi], f"line {line}"))
    if not edges:
        raise TaxonomyError("empty input: a header but no (child, parent) rows")
    return edges


def parse_json(text: str) -> list[Edge]:
    """(child, parent) edges from a JSON object {child: [parent, ...]}."""
    if not text.strip():
        raise TaxonomyError("empty input: expected a JSON object {child: [parents]}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaxonomyError(f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        raise TaxonomyError(f"expected a JSON object {{child: [parents]}}, got a {kind}")
    edges = []
    for child, parents in obj.items():
        if isinstance(parents, str):
            parents = [parents]  # a lone parent need not be wrapped in a list
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise TaxonomyError(f"the parents of {child!r} must be a list of strings")
        edges.extend(_checked(child, p, f"entry {child!r}") for p in parents)
    if not edges:
        raise TaxonomyError("empty input: no (child, parent) pairs in the JSON object")
    return edges


def parse_taxonomy(
    text: str, fmt: str, *, child_column: str = "child", parent_column: str = "parent"
) -> list[Edge]:
    if fmt == "json":
        return parse_json(text)
    if fmt not in FORMATS:
        raise TaxonomyError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    delimiter = "\t" if fmt == "tsv" else ","
    return parse_table(
        text, delimiter=delimiter, child_column=child_column, parent_column=parent_column
    )


def _checked(child: str, parent: str, where: str) -> Edge:
    for name in (child, parent):
        if not name:
            raise TaxonomyError(f"{where}: empty node name")
        if not _LINE_BREAKS.isdisjoint(name):
            raise TaxonomyError(f"{where}: node name {name!r} contains a line break")
    return child, parent


# --- the closure -----------------------------------------------------------------------


@dataclass(frozen=True)
class Closure:
    """A transitive closure over nodes numbered in output (bytewise row) order."""

    names: list[str]  # id -> name, sorted by csv_key
    ancestors: list[np.ndarray]  # id -> int32 ids of its ancestors, unique, any order

    def pairs(self) -> list[Edge]:
        """(descendant, ancestor) names, in row order; for tests and small inputs."""
        return [
            (self.names[d], self.names[a])
            for d, anc in enumerate(self.ancestors)
            for a in np.sort(anc).tolist()
        ]

    def counts(self) -> tuple[int, int]:
        """(nodes named by at least one edge, edges): what the training loader will see."""
        n = len(self.names)
        lengths = np.fromiter((len(a) for a in self.ancestors), dtype=np.int64, count=n)
        seen = lengths > 0
        if seen.any():
            seen[np.concatenate(self.ancestors)] = True
        return int(seen.sum()), int(lengths.sum())

    def __contains__(self, name: str) -> bool:
        i = bisect.bisect_left(self._keys, csv_key(name))
        return i < len(self.names) and self.names[i] == name

    def index(self, name: str, *, what: str = "node") -> int:
        """The id of `name`; an unknown name is a TaxonomyError that suggests near misses."""
        i = bisect.bisect_left(self._keys, csv_key(name))
        if i < len(self.names) and self.names[i] == name:
            return i
        raise TaxonomyError(f"unknown {what} {name!r}: {_no_such_node_hint(self.names, name)}")

    @cached_property
    def _keys(self) -> list[str]:
        return [csv_key(n) for n in self.names]


_EMPTY = np.empty(0, dtype=np.int32)


def csv_key(name: str) -> str:
    """Sort key that puts (id1, id2) pairs in the bytewise order of their written rows.

    A row starts with the csv-quoted id1 then ","; a quoted field never has a complete
    field plus "," as a proper prefix, so comparing quoted+"," per column is the same as
    comparing whole rows. Python compares str by code point, which is UTF-8 byte order.
    """
    return csv_field(name) + ","


def csv_field(name: str) -> str:
    """`name` as the csv module writes it in a row (QUOTE_MINIMAL)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([name, ""])
    return buf.getvalue()[:-2]  # drop the empty second field's "," and the "\n"


def clean_edges(edges: Iterable[Edge], *, examples: int = 3) -> tuple[list[Edge], Dropped]:
    """Drop repeated edges and self-loops, keeping first-seen order; say what went."""
    seen: set[Edge] = set()
    kept: list[Edge] = []
    dups: list[Edge] = []
    loops: list[str] = []
    for edge in edges:
        if edge[0] == edge[1]:
            loops.append(edge[0])
        elif edge in seen:
            dups.append(edge)
        else:
            seen.add(edge)
            kept.append(edge)
    dropped = Dropped(len(dups), tuple(dups[:examples]), len(loops), tuple(loops[:examples]))
    return kept, dropped


def transitive_closure(edges: Iterable[Edge], *, nodes: Iterable[str] = ()) -> Closure:
    """The closure of (child, parent) edges: every node's ancestors. Raises CycleError.

    `nodes` adds nodes that may have no edges, so that closures of two relations over
    the same nodes share their ids.

    Nodes are visited parents-first (Kahn's order), so each node's array is its parents'
    arrays plus the parents: time and memory are linear in the closure size (4 bytes
    per closure edge plus a small array header per node).
    """
    edges = list(edges)
    names = sorted({n for edge in edges for n in edge}.union(nodes), key=csv_key)
    ids = {name: i for i, name in enumerate(names)}
    n = len(names)
    parents: list[list[int]] = [[] for _ in range(n)]
    children: list[list[int]] = [[] for _ in range(n)]
    for c, p in {(ids[c], ids[p]) for c, p in edges}:
        if c == p:
            raise CycleError([names[c], names[c]])
        parents[c].append(p)
        children[p].append(c)
    waiting = [len(ps) for ps in parents]  # parents not yet visited
    ready = deque(i for i in range(n) if waiting[i] == 0)
    anc: list[np.ndarray | None] = [None] * n
    while ready:
        node = ready.popleft()
        ps = parents[node]
        if not ps:
            a = _EMPTY
        elif len(ps) == 1:  # a tree node: one copy plus the parent, no dedup needed
            p = ps[0]
            a = np.empty(len(anc[p]) + 1, dtype=np.int32)
            a[:-1] = anc[p]
            a[-1] = p
        else:
            a = np.unique(np.concatenate([anc[p] for p in ps] + [np.array(ps, np.int32)]))
        anc[node] = a
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if any(a is None for a in anc):
        stuck = {names[i]: {names[p] for p in parents[i]} for i in range(n) if anc[i] is None}
        raise CycleError(_find_cycle(stuck))
    return Closure(names, anc)


def _find_cycle(stuck: Mapping[str, set[str]]) -> list[str]:
    """One cycle among the nodes that Kahn's order could not reach.

    Each stuck node has a stuck parent (else it would have been reached), so walking
    parent links from any stuck node must revisit a node; the loop from there is a cycle.
    """
    node = min(stuck)  # deterministic messages
    order: dict[str, int] = {}
    path: list[str] = []
    while node not in order:
        order[node] = len(path)
        path.append(node)
        node = min(p for p in stuck[node] if p in stuck)
    return path[order[node] :] + [node]


def subtree(closure: Closure, root: str) -> Closure:
    """The sub-taxonomy under `root`: root and its descendants, ancestors among them only."""
    r = closure.index(root, what="root")
    keep = np.zeros(len(closure.names), dtype=bool)
    keep[r] = True
    for i, a in enumerate(closure.ancestors):
        if r in a:  # linear scan of a short array; cheaper than building sets
            keep[i] = True
    new_id = np.cumsum(keep, dtype=np.int32) - 1  # old id -> new id; order is kept
    kept = np.flatnonzero(keep).tolist()
    return Closure(
        [closure.names[i] for i in kept],
        [new_id[a[keep[a]]] for a in (closure.ancestors[i] for i in kept)],
    )


def drop_descendants(closure: Closure, nodes: Iterable[str]) -> tuple[Closure, dict[str, int]]:
    """Remove the edges whose descendant (id1) is one of `nodes`; count what each lost."""
    anc = list(closure.ancestors)
    lost = {}
    for name in nodes:
        i = closure.index(name, what="node to exclude")
        lost[name] = len(anc[i])
        anc[i] = _EMPTY
    return Closure(closure.names, anc), lost


def _no_such_node_hint(names: list[str], name: str) -> str:
    # difflib is quadratic-ish per candidate; past ~100k names the hint is not worth it
    close = difflib.get_close_matches(name, names, n=3) if len(names) <= 100_000 else []
    if close:
        return f"not in the taxonomy; did you mean {', '.join(map(repr, close))}?"
    return f"not in the taxonomy ({len(names)} nodes, e.g. {names[0]!r})"


# --- output ----------------------------------------------------------------------------


def row_chunks(closure: Closure) -> Iterator[str]:
    """The `id1,id2,1` rows, newline-terminated, in bytewise order; one chunk per node."""
    fields = [csv_field(n) for n in closure.names]
    for d, anc in enumerate(closure.ancestors):
        if len(anc):
            head = fields[d] + ","
            yield "".join([head + fields[a] + ",1\n" for a in np.sort(anc).tolist()])


def write_closure(closure: Closure, fh: TextIO) -> str:
    """Write header and rows to a text file opened with newline=""; return rows_sha256."""
    h = hashlib.sha256()
    fh.write(HEADER + "\n")
    for chunk in row_chunks(closure):
        fh.write(chunk)
        h.update(chunk.encode("utf-8"))
    return h.hexdigest()


def rows_sha256(closure: Closure) -> str:
    """sha256 of the sorted, newline-terminated rows without the header (README's checksum)."""
    h = hashlib.sha256()
    for chunk in row_chunks(closure):
        h.update(chunk.encode("utf-8"))
    return h.hexdigest()


# --- test data -------------------------------------------------------------------------


def random_taxonomy(n: int, *, seed: int = 0, extra_parent_prob: float = 0.1) -> list[Edge]:
    """(child, parent) edges of a random DAG on nodes n0..n{n-1} with root n0.

    Node k takes a uniform parent among the earlier nodes (a random recursive tree,
    depth ~ ln n), and with probability `extra_parent_prob` one more distinct one.
    """
    if n < 1:
        raise ValueError(f"Invalid node count: {n} (need at least 1)")
    if not 0.0 <= extra_parent_prob <= 1.0:
        raise ValueError(f"Invalid extra_parent_prob: {extra_parent_prob} (need 0..1)")
    rng = random.Random(seed)
    edges = []
    for k in range(1, n):
        p = rng.randrange(k)
        edges.append((f"n{k}", f"n{p}"))
        if k > 1 and rng.random() < extra_parent_prob:
            q = rng.randrange(k - 1)
            q += q >= p  # uniform over the earlier nodes other than p
            edges.append((f"n{k}", f"n{q}"))
    return edges
