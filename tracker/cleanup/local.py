"""Engine of ``cli.py cleanup --directory DIR --keep N [--dry-run]``: rotate a folder's checkpoints.

Two steps, so that a dry run and a real run show the same decisions:
``plan_local`` lists the folder and decides with the same rules as a training run
(``retention.decide``); it only lists and stats. ``execute`` then deletes what the plan says,
or, in a dry run, reports what it would delete.

``Plan`` and ``Report`` do not depend on where checkpoints live: the tracking-store mode builds
its plan with ``plan_groups`` from the run's records and passes its own ``delete`` to
``execute``.

What this never deletes:
- the final model ``<model>.pth`` and anything whose name is not a checkpoint name of ours
  (``x_epoch3.pth.tmp``, ``notes_epoch3.txt``, names containing ``..``);
- anything that is not a regular file: directories named like a checkpoint, and every
  symlink, wherever it points. A link is never followed and never removed: removing it cannot
  free the target's space, and skipping links means no decision depends on where one points;
- files in subfolders: the scan is not recursive, since a subfolder may belong to another run;
- the newest ``keep`` per model, the best epoch and protected epochs (``retention``);
- every file of an epoch that has more than one (``m_epoch3.pth`` and ``m_epoch0003.pth``):
  which copy is the real one is for a person to say.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tracker.fmt import human_bytes
from tracker.policy.names import is_final_model_name, parse_checkpoint_name
from tracker.policy.retention import CheckpointRecord, Decision, check_keep, decide

# Deletes one checkpoint by name. Raising FileNotFoundError means "already gone" (a success);
# any other exception is recorded as that file's failure and the others still go ahead.
Deleter = Callable[[str], None]

Status = Literal["deleted", "already gone", "would delete", "failed"]


class CleanupError(ValueError):
    """The cleanup cannot start: a one-line message naming the path and what is wrong."""


@dataclass(frozen=True)
class Skipped:
    name: str  # an entry that looks like ours but is left alone
    reason: str  # why it is never deleted, e.g. "symlink: links are never deleted"


@dataclass(frozen=True)
class GroupPlan:
    model: str  # the model name shared by this group's checkpoints
    decisions: tuple[Decision, ...]  # one per checkpoint, ordered by epoch

    @property
    def found(self) -> int:
        return len(self.decisions)

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.keep)

    @property
    def deletions(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)

    @property
    def kept_epochs(self) -> tuple[int, ...]:
        return tuple(d.record.epoch for d in self.kept)

    @property
    def bytes_to_free(self) -> int:
        return sum(d.record.size or 0 for d in self.deletions)


@dataclass(frozen=True)
class Plan:
    kind: str  # where the checkpoints live: "local" here; the tracking-store mode sets its own
    location: str  # the folder (or run) cleaned, as shown to the user
    keep: int | None  # newest checkpoints kept per model; None keeps all
    groups: tuple[GroupPlan, ...]  # one per model, sorted by model name
    skipped: tuple[Skipped, ...] = ()  # checkpoint-like entries never touched, and why

    @property
    def deletions(self) -> tuple[tuple[str, Decision], ...]:
        """(model, decision) for every planned deletion, model by model, epoch by epoch."""
        return tuple((g.model, d) for g in self.groups for d in g.deletions)

    @property
    def bytes_to_free(self) -> int:
        return sum(g.bytes_to_free for g in self.groups)


@dataclass(frozen=True)
class Outcome:
    model: str  # the group the checkpoint belongs to
    decision: Decision  # the planned deletion, with its record and reason
    status: Status  # what happened to it
    error: str | None = None  # for "failed": the error, one line

    @property
    def freed(self) -> int:
        """Bytes this deletion freed (or would free, in a dry run); 0 if already gone or failed."""
        if self.status in ("deleted", "would delete"):
            return self.decision.record.size or 0
        return 0


@dataclass(frozen=True)
class Report:
    plan: Plan  # what was decided
    dry_run: bool  # True: nothing was deleted; "freed" means "would free"
    outcomes: tuple[Outcome, ...] = ()  # one per planned deletion, in plan order

    @property
    def deleted(self) -> tuple[Outcome, ...]:
        """Deletions that succeeded (or would, in a dry run), already-gone files included."""
        return tuple(o for o in self.outcomes if o.status != "failed")

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "failed")

    @property
    def bytes_freed(self) -> int:
        return sum(o.freed for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        """A JSON-ready dict. In a dry run, "deleted"/"bytes" count what would be deleted."""
        by_model: dict[str, list[Outcome]] = {}
        for o in self.outcomes:
            by_model.setdefault(o.model, []).append(o)
        return {
            "kind": self.plan.kind,
            "location": self.plan.location,
            "keep": self.plan.keep,
            "dry_run": self.dry_run,
            "models": [
                {
                    "model": g.model,
                    "found": g.found,
                    "kept": [_record_json(d) for d in g.kept],
                    "deleted": [
                        {**_record_json(o.decision), "status": o.status, "error": o.error}
                        for o in by_model.get(g.model, [])
                    ],
                }
                for g in self.plan.groups
            ],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.plan.skipped],
            "summary": {
                "deleted": len(self.deleted),
                "failed": len(self.failed),
                "bytes": self.bytes_freed,
            },
        }


def _record_json(d: Decision) -> dict:
    r = d.record
    return {"epoch": r.epoch, "name": r.name, "size": r.size, "reason": d.reason}


# ---------------------------------------------------------------------------------------------
# Planning


def one_record_per_epoch(
    by_model: dict[str, dict[int, list[CheckpointRecord]]],
) -> tuple[dict[str, list[CheckpointRecord]], list[Skipped]]:
    """Retention needs one record per epoch. Two files for one epoch of one model (say
    m_epoch1.pth and m_epoch0001.pth) are ambiguous: both are skipped, never deleted."""
    records_by_model: dict[str, list[CheckpointRecord]] = {}
    skipped: list[Skipped] = []
    for model, epochs in by_model.items():
        for epoch, records in epochs.items():
            if len(records) > 1:
                files = ", ".join(r.name for r in records)
                why = f"epoch {epoch} of {model!r} has several files ({files}): never deleted"
                skipped.extend(Skipped(r.name, why) for r in records)
            else:
                records_by_model.setdefault(model, []).append(records[0])
    return records_by_model, skipped


def plan_groups(
    kind: str,
    location: str,
    records_by_model: Mapping[str, Iterable[CheckpointRecord]],
    *,
    keep: int | None,
    best: Mapping[str, int] | None = None,
    protect: Mapping[str, Iterable[int]] | None = None,
    best_labels: Mapping[str, str] | None = None,
    skipped: Iterable[Skipped] = (),
) -> Plan:
    """Decide every model's records with ``retention.decide``; pure.

    best: model -> its best epoch, kept outside the newest ``keep`` (a tracked run's recorded
    best). protect: model -> epochs kept regardless. best_labels: model -> the reason shown for
    its best, e.g. "best (map=0.973)".
    """
    check_keep(keep)
    best, protect, best_labels = best or {}, protect or {}, best_labels or {}
    groups = tuple(
        GroupPlan(
            model=model,
            decisions=tuple(
                decide(
                    records_by_model[model],
                    keep=keep,
                    best_epoch=best.get(model),
                    protect=protect.get(model, ()),
                    best_label=best_labels.get(model, "best"),
                )
            ),
        )
        for model in sorted(records_by_model)
    )
    return Plan(kind=kind, location=location, keep=keep, groups=groups, skipped=tuple(skipped))


def _open_directory(directory: str | os.PathLike) -> tuple[Path, list[os.DirEntry]]:
    path = Path(directory)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CleanupError(f"no such directory: {path}") from None
    except OSError as e:
        raise CleanupError(f"cannot read directory {path}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CleanupError(f"not a directory: {path}")
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as e:
        raise CleanupError(f"cannot read directory {path}: {e.strerror or e}") from None
    return path, entries


def _kind_problem(entry: os.DirEntry) -> str | None:
    """Why an entry with a checkpoint-like name is not a file we may delete, or None."""
    if entry.is_symlink():
        return "symlink: links are never deleted or followed"
    if entry.is_dir(follow_symlinks=False):
        return "directory named like a checkpoint: never deleted"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file: never deleted"
    return None


def plan_local(
    directory: str | os.PathLike,
    keep: int | None,
    *,
    best: Mapping[str, int] | None = None,
    protect: Mapping[str, Iterable[int]] | None = None,
    best_labels: Mapping[str, str] | None = None,
) -> Plan:
    """List ``directory`` (not recursively) and decide, per model, which checkpoints to delete.

    Only lists and stats; raises CleanupError if the folder cannot be read, ValueError for a
    bad ``keep``. See the module docstring for what is never deleted.
    """
    check_keep(keep)  # before touching the disk: a bad value is the user's first error to see
    path, entries = _open_directory(directory)
    by_model: dict[str, dict[int, list[CheckpointRecord]]] = {}
    skipped: list[Skipped] = []
    for entry in sorted(entries, key=lambda e: e.name):
        name = entry.name
        parsed = parse_checkpoint_name(name)
        if parsed is None:
            if is_final_model_name(name):
                skipped.append(Skipped(name, "final model: never deleted"))
            continue  # not ours: not even worth a line in the report
        problem = _kind_problem(entry)
        if problem is None:
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError as e:  # vanished or unreadable between listing and stat
                problem = f"cannot stat: {e.strerror or e}"
        if problem is not None:
            skipped.append(Skipped(name, problem))
            continue
        record = CheckpointRecord(epoch=parsed.epoch, name=name, size=size)
        by_model.setdefault(parsed.model, {}).setdefault(parsed.epoch, []).append(record)

    records_by_model, ambiguous = one_record_per_epoch(by_model)
    skipped.extend(ambiguous)
    return plan_groups(
        "local",
        str(path),
        records_by_model,
        keep=keep,
        best=best,
        protect=protect,
        best_labels=best_labels,
        skipped=sorted(skipped, key=lambda s: s.name),
    )


# ---------------------------------------------------------------------------------------------
# Acting


def local_deleter(directory: str | os.PathLike) -> Deleter:
    """Deletes ``directory/name``, only if it is still a regular file when the time comes.

    The check is repeated here because the folder may have changed since it was planned (a
    file replaced by a link or a folder must not be removed).
    """
    root = Path(directory)

    def delete(name: str) -> None:
        if parse_checkpoint_name(name) is None:  # also rules out separators and ".."
            raise CleanupError(f"refusing to delete {name!r}: not a checkpoint name")
        target = root / name
        st = os.lstat(target)  # FileNotFoundError here means already gone: a success
        if not stat.S_ISREG(st.st_mode):
            raise CleanupError(f"refusing to delete {target}: no longer a regular file")
        os.unlink(target)

    return delete


def execute(plan: Plan, *, dry_run: bool, delete: Deleter | None = None) -> Report:
    """Carry out ``plan``: delete each planned checkpoint, or only report it when ``dry_run``.

    delete: how to remove one checkpoint by name; defaults to ``local_deleter`` for local plans
    (other kinds must pass theirs). A failure on one file is recorded and the rest go ahead;
    a file already gone counts as deleted.
    """
    if delete is None and not dry_run:
        if plan.kind != "local":
            raise ValueError(f"execute needs a delete function for a {plan.kind!r} plan")
        delete = local_deleter(plan.location)
    outcomes = []
    for model, decision in plan.deletions:
        if dry_run:
            outcomes.append(Outcome(model, decision, "would delete"))
            continue
        try:
            delete(decision.record.name)
        except FileNotFoundError:
            outcomes.append(Outcome(model, decision, "already gone"))
        except Exception as e:  # one bad file must not stop the others; it is reported
            outcomes.append(Outcome(model, decision, "failed", _one_line(e)))
        else:
            outcomes.append(Outcome(model, decision, "deleted"))
    return Report(plan=plan, dry_run=dry_run, outcomes=tuple(outcomes))


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"{type(e).__name__}: {' '.join(text.split())}"


# ---------------------------------------------------------------------------------------------
# Rendering


def render_text(report: Report) -> str:
    """The report for people: per model what was found, kept and deleted, then a summary."""
    plan = report.plan
    keep = "every checkpoint" if plan.keep is None else f"the newest {plan.keep} checkpoints"
    dry = " (dry run: nothing is deleted)" if report.dry_run else ""
    lines = [f"{plan.location}: keeping {keep} per model{dry}"]
    outcome = {(o.model, o.decision.record.epoch): o for o in report.outcomes}
    for g in plan.groups:
        epochs = ", ".join(str(e) for e in g.kept_epochs) or "none"
        found = f"{g.found} checkpoint{'' if g.found == 1 else 's'} found"
        lines.append(f"{g.model}: {found}, keeping epochs {epochs}")
        for d in g.kept:
            lines.append(f"  kept          {d.record.name}: {d.reason}")
        for d in g.deletions:
            o = outcome.get((g.model, d.record.epoch))
            status = o.status if o is not None else "to delete"
            why = o.error if o is not None and o.error else d.reason
            size = human_bytes(d.record.size)
            shown = status.upper() if status == "failed" else status
            lines.append(f"  {shown:<13} {d.record.name} ({size}): {why}")
    for s in plan.skipped:
        lines.append(f"skipped {s.name}: {s.reason}")
    lines.append(_summary(report))
    return "\n".join(lines)


def _summary(report: Report) -> str:
    n = len(report.deleted)
    files = f"{n} file{'' if n == 1 else 's'}"
    freed = human_bytes(report.bytes_freed)
    if report.dry_run:
        text = f"Would delete {files}, would free {freed}"
    else:
        text = f"Deleted {files}, freed {freed}"
    if report.failed:
        k = len(report.failed)
        text += f"; {k} deletion{'' if k == 1 else 's'} failed"
    return text
