"""Served by `mlflow models serve`: the final embedding of a hype run.

Input DataFrame with columns u, v (node names) -> column `distance`.
Input DataFrame with columns node, k -> columns node, neighbor, rank, distance (k nearest).
A bad request (unknown node, wrong columns, bad k) raises MlflowException(INVALID_PARAMETER_VALUE):
the scoring server answers 400 with the message; any other exception would be a 400 whose body
carries a server stack trace and no useful message.
"""

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from hype import manifolds, node_names  # shipped with the model through code_paths


class HypeEmbedding(PythonModel):
    def load_context(self, context):
        ckpt = torch.load(context.artifacts["embedding"], map_location="cpu", weights_only=True)
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

    def predict(self, context, model_input, params=None):
        try:
            df = pd.DataFrame(model_input)
        except (ValueError, TypeError) as e:
            raise _bad(f"expected a table with columns (u, v) or (node, k): {e}") from None
        if {"u", "v"} <= set(df.columns):
            u = self.emb[self._lookup(df["u"])]
            v = self.emb[self._lookup(df["v"])]
            return pd.DataFrame({"u": df["u"], "v": df["v"],
                                 "distance": self.geometry.distance(u, v).numpy()})
        if {"node", "k"} <= set(df.columns):
            rows = []
            for node, k in zip(df["node"], df["k"], strict=True):
                k = _positive_int(k)
                i = self._lookup([node])[0]
                d = self.geometry.distance(self.emb[i].unsqueeze(0), self.emb)  # (N,)
                d[i] = float("inf")
                top = torch.topk(d, min(k, len(d) - 1), largest=False)
                for r, (j, dist) in enumerate(zip(top.indices.tolist(), top.values.tolist(), strict=True)):
                    rows.append({"node": node, "neighbor": self.names[j], "rank": r + 1, "distance": dist})
            return pd.DataFrame(rows)
        raise _bad(f"expected columns (u, v) or (node, k), got {[str(c) for c in df.columns]}")


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def _positive_int(k) -> int:
    try:
        value = float(k)
    except (TypeError, ValueError):
        raise _bad(f"k must be an integer >= 1, got {k!r}") from None
    if not value.is_integer() or value < 1:
        raise _bad(f"k must be an integer >= 1, got {k!r}")
    return int(value)


set_model(HypeEmbedding())
