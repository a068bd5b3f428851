"""Cleanup reports, for people (text) and for programs (JSON); a dry run prints exactly the plan."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.cleanup.targets import Result
from tracker.fmt import human_bytes


def _sides(item) -> str:
    sides = [s for s, here in (("local", item.local), ("tracked", item.tracked)) if here]
    return " + ".join(sides) or "nowhere"


def rows(result: Result) -> list[dict]:
    """One row per checkpoint of the target: kept (with every policy that kept it) or deleted."""
    plan = result.target.plan
    if plan is None:
        return []
    done = {d.item.epoch: d for d in (result.applied.deletions if result.applied else ())}
    by_epoch = plan.inventory.by_epoch()
    out = []
    for d in plan.decisions:
        item = by_epoch[d.record.epoch]
        row = {"epoch": item.epoch, "name": item.name, "size": item.size, "value": item.value,
               "local": item.local, "tracked": item.tracked, "stored": item.stored,
               "keep": d.keep, "reason": d.reason, "kept_by": list(d.kept_by), "status": "kept"}
        out.append(row)
    for item, reason in plan.deletions:
        row = next((r for r in out if r["epoch"] == item.epoch), None)
        if row is None:  # an interrupted deletion being finished
            row = {"epoch": item.epoch, "name": item.name, "size": item.size, "value": item.value,
                   "local": item.local, "tracked": item.tracked, "stored": item.stored,
                   "keep": False, "reason": reason, "kept_by": [], "status": "kept"}
            out.append(row)
        d = done.get(item.epoch)
        row["status"] = d.status if d else "to delete"
        row["error"] = d.error if d else None
        row["local_result"] = d.local if d else None
        row["freed"] = d.freed if d else 0
    return sorted(out, key=lambda r: r["epoch"])


def render_result(result: Result) -> str:
    t = result.target
    if t.skip is not None:
        return f"{t.title}: skipped, {t.skip}"
    head = t.title
    if t.kind == "run":
        best = "none recorded" if t.best_epoch is None else str(t.best_epoch)
        head += f": model {t.model}, best epoch {best}"
    head += f"; keeping {t.policies_text}" if t.policies_text else ""
    lines = [head]
    if t.tracked_location:
        lines.append(f"  tracked: {t.tracked_location}")
    if t.kind == "run":
        lines.append(f"  local:   {t.local_location or 'no local copies (no folder of this run here)'}")
    lines += [f"  WARNING: {w}" for w in t.warnings]
    table = rows(result)
    if t.plan is not None and not table and not t.plan.inventory.not_ours:
        lines.append("  no checkpoints")
    for r in table:
        where = " + ".join(s for s in ("local", "tracked") if r[s]) or "nowhere"
        if r["status"] == "kept":
            lines.append(f"  kept          {r['name']}: {r['reason']} [{where}]")
            continue
        status = "FAILED" if r["status"] == "failed" else r["status"]
        why = r.get("error") or r["reason"]
        local_result = r.get("local_result") or ""
        extra = f"; local copy {local_result}" if local_result.startswith("not ours") else ""
        lines.append(f"  {status:<13} {r['name']} ({human_bytes(r['size'])}): {why} [{where}]{extra}")
    if t.plan is not None:
        for s in t.plan.inventory.not_ours:
            lines.append(f"  left alone    {s.name}: {s.reason}")
    lines += [f"  ERROR: {p}" for p in result.problems]
    return "\n".join(lines)


def totals(results: Sequence[Result], dry_run: bool) -> dict:
    deleted = [d for r in results if r.applied for d in r.applied.deletions if d.status != "failed"]
    return {"targets": len(results), "skipped": sum(r.target.skip is not None for r in results),
            "deleted": len(deleted), "bytes": sum(d.freed for d in deleted),
            "failed": sum(len(r.failed) for r in results),
            "problems": sum(len(r.problems) for r in results), "dry_run": dry_run}


def render_summary(results: Sequence[Result], dry_run: bool) -> str:
    s = totals(results, dry_run)
    runs = sum(r.target.kind == "run" for r in results)
    flat = len(results) - runs
    parts = [f"{runs} run{'' if runs == 1 else 's'}"] if runs else []
    parts += [f"{flat} model{'' if flat == 1 else 's'} in a flat folder"] if flat else []
    what = " and ".join(parts)
    what += f" ({s['skipped']} skipped)" if s["skipped"] else ""
    files = f"{s['deleted']} checkpoint{'' if s['deleted'] == 1 else 's'}"  # local and tracked copy: one
    if dry_run:
        text = f"{what}: would delete {files}, would free {human_bytes(s['bytes'])}"
        text += " (dry run: nothing deleted)"
    else:
        text = f"{what}: deleted {files}, freed {human_bytes(s['bytes'])}"
    if s["failed"]:
        text += f"; {s['failed']} deletion{'' if s['failed'] == 1 else 's'} FAILED"
    if s["problems"]:
        text += f"; {s['problems']} problem{'' if s['problems'] == 1 else 's'} (see ERROR lines)"
    return text


def to_json(results: Sequence[Result], *, dry_run: bool, policies: str) -> dict:
    targets = []
    for r in results:
        t = r.target
        targets.append({
            "kind": t.kind, "title": t.title, "run_id": t.run_id, "experiment": t.experiment,
            "status": t.status, "model": t.model, "best_epoch": t.best_epoch,
            "tracked": t.tracked_location, "local": t.local_location, "skipped": t.skip,
            "warnings": list(t.warnings), "problems": list(r.problems), "checkpoints": rows(r),
            "not_ours": [{"name": s.name, "reason": s.reason}
                         for s in (t.plan.inventory.not_ours if t.plan else ())],
        })
    return {"dry_run": dry_run, "policies": policies, "targets": targets, "summary": totals(results, dry_run)}
