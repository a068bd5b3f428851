"""The noun benchmark's callbacks and figures: the wall-clock budget, exact checks and the curve
(WallBudget), the paper's numbers and issue 13's goals, and the average of the last epochs
(log_average). Used by benchmarks/nouns.py."""

from __future__ import annotations

import csv
import time
from pathlib import Path

PAPER = {"mean_rank": 4.02, "map": 0.851}  # Nickel & Kiela (2017), Table 1, Poincaré dim 10
GOALS = {10: (4.02, 0.90), 5: (4.9, 0.85)}  # issue 13: (MR at most, MAP at least) by dim
RECHECK_S = 150.0  # seconds between exact checks triggered by the sampled estimate


def log(msg: str) -> None:
    print(msg, flush=True)


def meets(mean_rank: float, map_: float) -> bool:
    return mean_rank <= PAPER["mean_rank"] and map_ >= PAPER["map"]


class WallBudget:
    """hype.train callbacks: the tracked run's, plus a wall-clock stop, exact checks, the curve.

    Exact evaluations on all nodes run every `exact_every_s`, and also as soon as the sampled
    estimate meets the paper's numbers (then at most every RECHECK_S until the exact ones do:
    the sampled mean rank runs about 0.4 below the exact one), so the time to reach them is
    measured exactly. Stopping is decided here, before the epoch's checkpoint is written.
    """

    def __init__(self, tracked, *, t0: float, deadline: float, exact_every_s: float,
                 curve_path: Path, stop_at_target: bool, exact_epochs: int = 0, average_last: int = 0):
        from collections import deque

        self.tracked, self.t0, self.deadline = tracked, t0, deadline
        # the last epochs' embeddings (a clone each, ~6.5 MB at dim 10), averaged at the end
        self.recent = deque(maxlen=average_last) if average_last > 0 else None
        self.exact_every_s = exact_every_s
        self.exact_epochs = exact_epochs  # also an exact evaluation every this many epochs (0: none)
        self.next_exact = t0 + exact_every_s if exact_every_s > 0 else float("inf")
        self.last_exact = -float("inf")
        self.curve_path = curve_path
        self.stop_at_target = stop_at_target
        self.rows: list[dict] = []
        self.eval_seconds = 0.0  # exact evaluations during training (included in the wall time)
        self.reached: dict | None = None  # first exact evaluation that met the paper's numbers

    def _exact_due(self, metrics: dict, now: float, epoch: int) -> bool:
        if not metrics or now >= self.deadline:
            return False
        if now >= self.next_exact or (self.exact_epochs and epoch % self.exact_epochs == 0):
            return True
        sampled = metrics.get("mean_rank_sampled"), metrics.get("map_sampled")
        return (self.reached is None and None not in sampled and meets(*sampled)
                and now - self.last_exact >= RECHECK_S)

    def on_epoch_end(self, result, state):
        from mlflow.entities import Metric

        from hype.evaluate import reconstruction

        metrics = dict(result.metrics)
        if self._exact_due(metrics, time.perf_counter(), result.epoch):
            t = time.perf_counter()
            r = reconstruction(state.emb, self.tracked.graph, state.config.manifold)
            self.eval_seconds += time.perf_counter() - t
            metrics.update(mean_rank=float(r.mean_rank), map=float(r.map))
            self.last_exact = time.perf_counter()
            if self.exact_every_s > 0:  # 0: by epoch (and target) only
                self.next_exact = self.last_exact + self.exact_every_s
        wall = time.perf_counter() - self.t0
        now_ms = int(time.time() * 1000)
        extra = [Metric("wall_seconds", wall, now_ms, result.epoch)]
        extra += [Metric(k, metrics[k], now_ms, result.epoch)
                  for k in ("mean_rank", "map") if k in metrics and k not in result.metrics]
        self.tracked.client.log_batch(self.tracked.run_id, metrics=extra)
        reason = self.tracked.on_epoch_end(result, state)
        if self.recent is not None:
            self.recent.append(state.emb.detach().clone())
        if result.metrics:
            row = {"wall_s": round(wall, 1), "epoch": result.epoch, "lr": result.lr,
                   "loss": round(result.loss, 5), **{k: round(v, 5) for k, v in metrics.items()}}
            self.rows.append(row)
            self._write_curve()
            log("  ".join(f"{k}={v}" for k, v in row.items()))
        if "map" in metrics and self.reached is None and meets(metrics["mean_rank"], metrics["map"]):
            self.reached = {"wall_minutes": round(wall / 60, 2), "epoch": result.epoch,
                            "mean_rank": round(metrics["mean_rank"], 4), "map": round(metrics["map"], 4)}
            log(f"reached the paper's numbers (exact, all nodes) at {wall / 60:.1f} min, "
                f"epoch {result.epoch}")
            self.tracked.client.set_tag(self.tracked.run_id, "hype.paper_reached_minutes",
                                        f"{wall / 60:.2f}")
            if reason is None and self.stop_at_target:
                reason = (f"stopped: reached MR <= {PAPER['mean_rank']} and MAP >= {PAPER['map']} "
                          f"(exact) at epoch {result.epoch}")
                log(reason)
        if reason is None and time.perf_counter() >= self.deadline:
            reason = (f"stopped: wall-clock budget reached at epoch {result.epoch} "
                      f"({wall / 60:.1f} min, leaving time for the final evaluation)")
            log(reason)  # finish() tags the run with it; the tracker printed its own reasons
        return reason

    def on_checkpoint(self, state):
        self.tracked.on_checkpoint(state)

    def _write_curve(self):
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.curve_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)


def log_average(tracked, recent, state) -> dict:
    """Each node's Lorentzian centroid of the last epochs' embeddings (iterate averaging: the
    late steps are large, and their noise averages out): evaluated exactly on all nodes, logged
    as metrics average_mean_rank / average_map and as <model>_average.pth beside the final model."""
    from mlflow.entities import Metric

    from hype.evaluate import reconstruction
    from hype.manifolds import average
    from tracker import layout
    from tracker.checkpoints.files import save_atomic

    emb = average(state.config.manifold, list(recent))
    r = reconstruction(emb, tracked.graph, state.config.manifold)
    out = {"epochs": len(recent), "mean_rank": round(float(r.mean_rank), 4), "map": round(float(r.map), 4)}
    path = tracked.local_dir / f"{tracked.tconfig.model_name}_average.pth"
    ckpt = state.checkpoint()
    ckpt.update(embeddings=emb, final=True, averaged_epochs=len(recent))
    save_atomic(ckpt, path)
    client, run_id = tracked.client, tracked.run_id
    client.log_artifact(run_id, str(path), layout.FINAL_FOLDER)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("average_mean_rank", out["mean_rank"], now, state.epoch),
                                      Metric("average_map", out["map"], now, state.epoch)])
    log(f"average of the last {len(recent)} epochs (exact, all nodes): MR {out['mean_rank']}, "
        f"MAP {out['map']}")
    return out
