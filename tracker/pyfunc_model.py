"""Served by `mlflow models serve`: the final embedding of a hype run.

Input DataFrame with columns u, v (node names) -> column `distance`.
Input DataFrame with columns node, k -> columns node, neighbor, rank, distance (k nearest).
"""

import numpy as np
import pandas as pd
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from hype import manifolds  # shipped with the model through code_paths


class HypeEmbedding(PythonModel):
    def load_context(self, context):
        ckpt = torch.load(context.artifacts["embedding"], map_location="cpu", weights_only=True)
        self.emb = ckpt["embeddings"].to(torch.float64)  # (N, D)
        self.names = list(ckpt["names"])
        self.index = {n: i for i, n in enumerate(self.names)}
        self.geometry = manifolds.get(ckpt["config"]["manifold"])

    def _lookup(self, values) -> np.ndarray:
        missing = [str(v) for v in values if v not in self.index]
        if missing:
            raise ValueError(f"unknown node(s): {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return np.array([self.index[v] for v in values], dtype=np.int64)

    def predict(self, context, model_input, params=None):
        df = pd.DataFrame(model_input)
        if {"u", "v"} <= set(df.columns):
            u = self.emb[self._lookup(df["u"])]
            v = self.emb[self._lookup(df["v"])]
            return pd.DataFrame({"u": df["u"], "v": df["v"],
                                 "distance": self.geometry.distance(u, v).numpy()})
        if {"node", "k"} <= set(df.columns):
            rows = []
            for node, k in zip(df["node"], df["k"], strict=True):
                k = int(k)
                if k < 1:
                    raise ValueError(f"k must be >= 1, got {k}")
                i = self._lookup([node])[0]
                d = self.geometry.distance(self.emb[i].unsqueeze(0), self.emb)  # (N,)
                d[i] = float("inf")
                top = torch.topk(d, min(k, len(d) - 1), largest=False)
                for r, (j, dist) in enumerate(zip(top.indices.tolist(), top.values.tolist(), strict=True)):
                    rows.append({"node": node, "neighbor": self.names[j], "rank": r + 1, "distance": dist})
            return pd.DataFrame(rows)
        raise ValueError(f"expected columns (u, v) or (node, k), got {list(df.columns)}")


set_model(HypeEmbedding())
