"""Served by `mlflow models serve`: the final embedding of a hype run.

Input DataFrame with columns u, v (node names) -> column `distance`.
Input DataFrame with columns node, k -> columns node, neighbor, rank, distance (k nearest).
A bad request (unknown node, wrong or duplicate columns, bad k, over a limit) raises
MlflowException(INVALID_PARAMETER_VALUE): the scoring server answers 400 with the message; any
other exception would be a 400 whose body carries a server stack trace and no useful message.

Limits, so that one request cannot make a worker build a response of many megabytes:
- MAX_ROWS rows per request, in either form; more is refused.
- k is clamped, not refused, to N - 1 (the number of other nodes): asking for more neighbours
  than exist returns all of them, which is what k=1e9 means.
- MAX_NEIGHBOURS_OUT output rows per (node, k) request, counted after clamping (the sum of k);
  more is refused, before any distance is computed, with a message saying how to split it.
All limits are checked on the parsed table: the scoring server has already read the body.

The artifact loads with weights_only=True; a file holding more than tensors is refused when the
server starts (load_context), with torch's advice to load it unsafely stripped from the log.
"""

import pickle

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from hype import manifolds, node_names, weights_only  # shipped with the model through code_paths

MAX_ROWS = 1_000  # rows per request, either form
# output rows of one (node, k) request; a row is ~90 bytes of JSON, so ~9 MB at most
MAX_NEIGHBOURS_OUT = 100_000


class HypeEmbedding(PythonModel):
    def load_context(self, context):
        path = context.artifacts["embedding"]
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # the serve log shows only this: torch's advice (weights_only=False) would run the payload
            raise _bad(f"{path}: {weights_only.refusal(e)}") from None
        self.emb = ckpt["embeddings"].to(torch.float64)  # (N, D)
        self.names = node_names.decode(ckpt["names"])
        self.index = {n: i for i, n in enumerate(self.names)}
        self.geometry = manifolds.get(ckpt["config"]["manifold"])

    def _lookup(self, values) -> np.ndarray:
        missing = [str(v) for v in values if not (isinstance(v, str) and v in self.index)]
        if missing:
            raise _bad(f"unknown node(s): {', '.join(missing[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return np.array([self.index[v] for v in values], dtype=np.int64)

    # pd.DataFrame is what the scoring server passes. MLflow neither validates data against this
    # hint nor infers a signature from it (unlike list[...] or pydantic hints, which would convert
    # the request), so predict receives the table as it did without a hint.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            df = pd.DataFrame(model_input)
        except (ValueError, TypeError) as e:
            raise _bad(f"expected a table with columns (u, v) or (node, k): {e}") from None
        columns = check_table(df.columns, len(df))
        if {"u", "v"} <= columns:
            u = self.emb[self._lookup(df["u"])]
            v = self.emb[self._lookup(df["v"])]
            return pd.DataFrame({"u": df["u"], "v": df["v"],
                                 "distance": self.geometry.distance(u, v).numpy()})
        if {"node", "k"} <= columns:
            return self._nearest(list(df["node"]), list(df["k"]))
        raise _bad(f"expected columns (u, v) or (node, k), got {[str(c) for c in df.columns]}")

    def _nearest(self, nodes: list, ks: list) -> pd.DataFrame:
        ks = neighbour_counts(ks, len(self.names))  # every check before any distance
        rows = self._lookup(nodes)
        out = {"node": [], "neighbor": [], "rank": [], "distance": []}
        for node, i, k in zip(nodes, rows, ks, strict=True):
            d = self.geometry.distance(self.emb[i].unsqueeze(0), self.emb)  # (N,)
            d[i] = float("inf")
            top = torch.topk(d, k, largest=False)
            out["node"] += [node] * k
            out["neighbor"] += [self.names[j] for j in top.indices.tolist()]
            out["rank"] += range(1, k + 1)
            out["distance"] += top.values.tolist()
        return pd.DataFrame(out)


def check_table(columns: pd.Index, n_rows: int) -> set:
    """The request's column names as a set, or a refusal: duplicate names or too many rows."""
    duplicates = sorted({str(c) for c in columns[columns.duplicated()]})
    if duplicates:
        # with a duplicate, df["u"] is a table, not a column: say so before anything reads it
        raise _bad(f"duplicate column(s): {', '.join(duplicates)}")
    if n_rows > MAX_ROWS:
        raise _bad(f"{n_rows} rows in one request; at most {MAX_ROWS} (MAX_ROWS): "
                   f"split it into requests of {MAX_ROWS} rows or fewer")
    return {str(c) for c in columns}


def neighbour_counts(ks: list, n_nodes: int) -> list[int]:
    """Each k as an int clamped to n_nodes - 1, or a refusal: a bad k, or too many output rows."""
    others = max(n_nodes - 1, 0)
    counts = [min(_positive_int(k), others) for k in ks]
    total = sum(counts)
    if total > MAX_NEIGHBOURS_OUT:
        raise _bad(f"this request asks for {total:,} neighbour rows (the sum of k, each k clamped to "
                   f"{others:,}, the number of other nodes); at most {MAX_NEIGHBOURS_OUT:,} per request "
                   f"(MAX_NEIGHBOURS_OUT): split it into requests whose k sum to {MAX_NEIGHBOURS_OUT:,} "
                   "or less, or ask for a smaller k")
    return counts


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def _positive_int(k) -> int:
    if isinstance(k, (bool, np.bool_)):
        # bool is an int in Python, so float(True) == 1.0 would pass the checks below
        raise _bad(f"k must be an integer >= 1, got {bool(k)}")
    if isinstance(k, (int, np.integer)):
        value = int(k)  # exact, however large: float() of a 400-digit int overflows
    else:
        try:
            as_float = float(k)
        except (TypeError, ValueError):
            raise _bad(f"k must be an integer >= 1, got {k!r}") from None
        # NaN and inf are not integers; 3.0 (JSON numbers parsed as floats) is
        value = int(as_float) if as_float.is_integer() else 0
    if value < 1:
        raise _bad(f"k must be an integer >= 1, got {k!r}")
    return value


set_model(HypeEmbedding())
