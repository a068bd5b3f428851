"""`cli.py checkpoints`: what each run holds, why, and where, read through the lifecycle's own
planning (the run's own retention rules, as its params recorded them). Nothing is changed.

One row per retained checkpoint: epoch, the epoch's metrics (map, mean_rank, loss) from the
store's history, size, the policies that keep it, where it lives (local, tracked) and whether
the copies agree with the run's records, and the checkpoint's model id (its URI for evaluate,
export and serve: ``models:/<id>``).
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.checkpoints.models import CheckpointModels
from tracker.cleanup.runs import RETRY, Selected
from tracker.cleanup.targets import plan_run
from tracker.fmt import human_bytes
from tracker.layout import PROJECT_ROOT
from tracker.policy import resume as resume_policy
from tracker.policy.stopping import dedupe
from tracker.store.errors import StoreError
from tracker.store.retry import call_with_retry
from tracker.training.config import TrackerConfig

METRICS = ("map", "mean_rank", "loss")


def _copies(item, not_ours: set[str]) -> tuple[str, str]:
    """(where, agreement) of one checkpoint's copies, for people."""
    sides = (("local", item.local), ("tracked", item.tracked))
    where = " + ".join(s for s, here in sides if here) or "nowhere"
    if item.name in not_ours:
        return where, "local file differs from the run's records"
    if item.tracked and not item.stored:
        return where, "tracked copy differs from the run's records"
    if item.local and item.tracked:
        return where, "agree" if item.sha256 or item.state == "legacy" else "sizes agree"
    return where, "one copy"


def describe_run(client: MlflowClient, sel: Selected) -> dict:
    """One run as a dict (the JSON form; the text form is rendered from it)."""
    run = sel.run
    run_id = run.info.run_id
    try:  # the policies as its resumes changed them
        params = resume_policy.effective(run.data.params, run.data.tags.get(layout.TAG_RESUMED_PARAMS))
    except ValueError:
        params = run.data.params  # plan_run skips the run and says why
    tconfig = TrackerConfig.from_params(params, run.data.tags)
    out = {"run_id": run_id, "run_name": run.info.run_name, "experiment": sel.experiment,
           "status": run.info.status, "model": run.data.tags.get(layout.TAG_MODEL_NAME),
           "policies": tconfig.retention.describe(), "best_epoch": None, "checkpoints": [],
           "problems": [], "skip": None}
    target = plan_run(client, sel, retention=tconfig.retention, include_running=True,
                      root=PROJECT_ROOT / "checkpoints")
    try:
        out["best_epoch"] = target.best_epoch
        out["problems"] = list(target.problems) + list(target.warnings)
        if target.skip is not None or target.plan is None:
            out["skip"] = target.skip
            return out
        history = {}
        for key in METRICS:
            rows = call_with_retry(f"read {key} of run {run_id}",
                                   lambda k=key: client.get_metric_history(run_id, k), RETRY)
            history[key] = dict(dedupe((m.step, m.value) for m in rows))
        try:
            models = CheckpointModels(client, run_id, run.info.experiment_id, retry=RETRY).by_epoch()
        except StoreError as e:
            models = {}
            out["problems"].append(f"cannot list its checkpoint models: {e}")
        not_ours = {s.name for s in target.plan.inventory.not_ours}
        by_epoch = target.plan.inventory.by_epoch()
        for d in target.plan.decisions:
            item = by_epoch[d.record.epoch]
            where, agree = _copies(item, not_ours)
            model = models.get(item.epoch)
            out["checkpoints"].append({
                "epoch": item.epoch, "name": item.name, "size": item.size,
                **{k: history[k].get(item.epoch) for k in METRICS},
                "kept_by": list(d.kept_by) if d.keep else [], "keep": d.keep,
                "why": d.reason, "local": item.local, "tracked": item.tracked, "where": where,
                "copies": agree, "best": item.epoch == target.best_epoch,
                "model_id": model[0] if model else None,
                "uri": f"models:/{model[0]}" if model else
                f"runs:/{run_id}/{layout.CHECKPOINT_FOLDER}/{item.name}"})
        return out
    finally:
        if target.checkpoints is not None:
            target.checkpoints.close()


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(run: dict) -> str:
    head = (f"run {run['run_id']} ({run['run_name']}, experiment {run['experiment']!r}, {run['status']}): "
            f"model {run['model']}, keeping {run['policies']}")
    lines = [head]
    if run["skip"]:
        return f"{head}\n  skipped: {run['skip']}"
    lines += [f"  WARNING: {p}" for p in run["problems"]]
    if not run["checkpoints"]:
        lines.append("  no retained checkpoints")
        return "\n".join(lines)
    cols = ("epoch", "map", "mean_rank", "loss", "size", "kept by", "where", "copies", "uri")
    rows = [(str(c["epoch"]) + (" *" if c["best"] else ""), _num(c["map"], ".4f"),
             _num(c["mean_rank"], ".3f"),
             _num(c["loss"], ".4f"), human_bytes(c["size"]),
             "; ".join(c["kept_by"]) if c["keep"] else f"to delete: {c['why']}", c["where"], c["copies"],
             c["uri"]) for c in run["checkpoints"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(cols)]
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(cols, widths, strict=True)).rstrip())
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("  * best epoch (early stopping's); evaluate, export or serve one with its uri")
    return "\n".join(lines)
