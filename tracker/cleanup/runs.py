"""Engine of ``cli.py cleanup --run-id/--experiment/--all-experiments``: the retention rules of a
training run, applied afterwards to runs in a tracking store.

For each run, its tracked checkpoints (artifact folder ``hype_checkpoints``) and their local
copies (in the folder named by the run's ``hype.checkpoint_dir`` tag) are decided together, by
epoch, with ``retention.decide``: the same records, rules and reasons as while training.

- ``select_runs`` finds the runs (I/O: the tracking store).
- ``plan_run`` lists one run's two folders (I/O: list and stat only) and calls the pure
  ``decide_run``, which returns a ``cleanup_local.Plan`` for each side.
- ``execute_run`` deletes the tracked copy of each planned checkpoint first and the local copy
  only after that succeeded (as the trainer does), or only reports in a dry run.

What this never deletes, besides what ``cleanup_local`` never deletes:
- anything outside ``hype_checkpoints``: the final model (``hype_model/``), the MLflow model,
  plots; the listing does not even look there;
- the run's best checkpoint (tag ``hype.best_epoch``); a run whose tag cannot be read is
  skipped rather than cleaned without that protection;
- a local file the store does not hold: its upload was never confirmed (``resume`` uploads it);
- a local file the store holds under another name, and any local file of an epoch kept;
- anything of a run that is still RUNNING (or SCHEDULED), unless ``include_running``: the
  trainer may be writing, and a crashed run may be resumed from exactly those files;
- the tracked copies of a store whose artifact repository cannot delete (reported as a
  warning); their local copies are still cleaned, as the trainer does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.cleanup.local import (
    CleanupError,
    Decision,
    GroupPlan,
    Plan,
    Report,
    Skipped,
    execute,
    local_deleter,
    one_record_per_epoch,
    plan_groups,
    plan_local,
    render_text,
)
from tracker.fmt import human_bytes
from tracker.policy.names import parse_checkpoint_name
from tracker.policy.retention import NOT_STORED, CheckpointRecord
from tracker.store.errors import StoreError, StorePermissionError, StoreUnavailable, TrackingError
from tracker.store.redact import redact, scrub
from tracker.store.retry import RetryPolicy, call_with_retry
from tracker.store.uri import check_uri, sqlite_path

IN_PROGRESS = frozenset({"RUNNING", "SCHEDULED"})  # a trainer may still be writing these runs
# A cleanup is run by a person who waits for it: fail within seconds, not minutes.
RETRY = RetryPolicy(total_s=10.0, first_delay_s=0.5, max_delay_s=2.0)
STORE_CANNOT_DELETE = "left in place: the store cannot delete"
TRACKED_FAILED = "kept: deleting its tracked copy failed"


# ---------------------------------------------------------------------------------------------
# Selecting runs


def open_client(uri: str) -> MlflowClient:
    """A client for ``uri`` that is known to answer; CleanupError (one line) otherwise.

    A SQLite file that does not exist is an error, not a new empty store: cleanup must not
    create databases.
    """
    try:
        check_uri(uri)
    except TrackingError as e:
        raise CleanupError(str(e)) from None
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise CleanupError(f"no tracking database at {db} (from {redact(uri)})")
    client = MlflowClient(uri)
    try:
        call_with_retry(f"reach {redact(uri)}", lambda: client.search_experiments(max_results=1), RETRY)
    except StoreUnavailable:
        raise CleanupError(f"cannot reach the tracking store {redact(uri)}: no answer within "
                           f"{RETRY.total_s:g} s (is the server running?)") from None
    except StoreError as e:
        raise CleanupError(f"cannot use the tracking store {redact(uri)}: {e}") from None
    return client


def _call(what: str, fn):
    try:
        return call_with_retry(what, fn, RETRY)
    except StoreError as e:
        raise CleanupError(str(e)) from None


@dataclass(frozen=True)
class Selected:
    run: Run
    experiment: str  # the experiment's name, for reports


def select_runs(
    client: MlflowClient,
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    all_experiments: bool = False,
) -> list[Selected]:
    """The runs to clean: one by id, every active run of one experiment, or of all of them.

    Raises CleanupError naming what does not exist (and, for an experiment, what does).
    """
    if sum((run_id is not None, experiment is not None, all_experiments)) != 1:
        raise ValueError("give exactly one of run_id, experiment, all_experiments")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise CleanupError(f"no run with id {run_id!r} in {redact(client.tracking_uri)}") from None
            raise CleanupError(f"cannot look up run {run_id!r}: {scrub(e.message)}") from None
        exp = client.get_experiment(run.info.experiment_id)
        return [Selected(run, exp.name)]
    if experiment is not None:
        exp = _call(f"look up experiment {experiment!r}", lambda: client.get_experiment_by_name(experiment))
        if exp is None or exp.lifecycle_stage == "deleted":
            names = sorted(e.name for e in _experiments(client))
            shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
            raise CleanupError(
                f"no experiment named {experiment!r} in {redact(client.tracking_uri)} "
                f"(experiments: {shown or 'none'})"
            )
        experiments = [exp]
    else:
        experiments = _experiments(client)
    return [Selected(run, exp.name) for exp in experiments for run in _runs(client, exp.experiment_id)]


def _experiments(client: MlflowClient) -> list:
    out, token = [], None
    while True:
        page = _call("list experiments", lambda t=token: client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=t))
        out.extend(page)
        token = page.token
        if not token:
            return out


def _runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    out, token = [], None
    while True:
        page = _call(f"list runs of experiment {experiment_id}", lambda t=token: client.search_runs(
            [experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
            order_by=["attributes.start_time ASC"], page_token=t))
        out.extend(page)
        token = page.token
        if not token:
            return out


# ---------------------------------------------------------------------------------------------
# Deciding (pure)


@dataclass(frozen=True)
class Decided:
    tracked: Plan  # the run's hype_checkpoints folder
    local: Plan | None  # the local copies, None without a local folder
    retention: Plan  # the decisions before the store's limits (what the trainer would do)


def decide_run(
    *,
    tracked: Mapping[str, int],
    local: Iterable[CheckpointRecord] = (),
    local_skipped: Iterable[Skipped] = (),
    keep: int,
    model: str | None,
    best_epoch: int | None,
    best_label: str = "best",
    can_delete: bool = True,
    tracked_failed: Iterable[str] = (),
    tracked_location: str = "tracked",
    local_location: str | None = None,
) -> Decided:
    """Decide one run's checkpoints from its two listings; pure.

    tracked: {name: size} of the files in hype_checkpoints.
    local: the regular checkpoint files in the local folder, as ``plan_local`` lists them.
    model: the run's model; its best epoch is protected (with no model tag, every model's).
    can_delete: whether the store can delete at all; if not, tracked deletions become keeps.
    tracked_failed: names whose tracked deletion failed; their local copies are kept.
    """
    records: dict[str, dict[int, list[CheckpointRecord]]] = {}
    skipped: list[Skipped] = []
    for name, size in sorted(tracked.items()):
        parsed = parse_checkpoint_name(name)
        if parsed is None:
            skipped.append(Skipped(name, "not a checkpoint name: never deleted"))
            continue
        rec = CheckpointRecord(parsed.epoch, name, size, stored=True)
        records.setdefault(parsed.model, {}).setdefault(parsed.epoch, []).append(rec)
    local = list(local)
    local_by_name = {r.name: r for r in local}
    for rec in local:
        parsed = parse_checkpoint_name(rec.name)
        if rec.name in tracked or parsed is None:
            continue
        if parsed.epoch in records.get(parsed.model, {}):
            continue  # held by the store under another name; decided (kept) below
        # Written but never confirmed stored: kept, and not counted among the newest.
        rec = replace(rec, stored=False)
        records.setdefault(parsed.model, {}).setdefault(parsed.epoch, []).append(rec)

    by_model, ambiguous = one_record_per_epoch(records)
    skipped.extend(ambiguous)
    protected_models = [model] if model is not None else list(by_model)
    best = {m: best_epoch for m in protected_models} if best_epoch is not None else {}
    retention = plan_groups(
        "tracked", tracked_location, by_model, keep=keep, best=best,
        best_labels={m: best_label for m in best}, skipped=sorted(skipped, key=lambda s: s.name),
    )

    # The store's side: only what it holds; deletions it cannot do become keeps.
    tracked_groups = []
    for g in retention.groups:
        decisions = tuple(
            d if d.keep or can_delete else Decision(d.record, True, f"{d.reason}; {STORE_CANNOT_DELETE}")
            for d in g.decisions if d.record.stored
        )
        if decisions:
            tracked_groups.append(GroupPlan(g.model, decisions))
    tracked_plan = replace(retention, groups=tuple(tracked_groups))

    local_plan = None
    if local_location is not None:
        local_plan = _local_side(retention, local_by_name, local_skipped, set(tracked_failed),
                                 local_location)
    return Decided(tracked_plan, local_plan, retention)


def _local_side(retention: Plan, local_by_name: dict[str, CheckpointRecord],
                local_skipped: Iterable[Skipped], tracked_failed: set[str], location: str) -> Plan:
    decided = {d.record.name: (g.model, d) for g in retention.groups for d in g.decisions}
    skipped_there = {s.name: s.reason for s in retention.skipped}
    groups: dict[str, list[Decision]] = {}
    skipped = list(local_skipped)
    for name, rec in sorted(local_by_name.items()):
        if name not in decided:
            why = skipped_there.get(name, f"the store holds epoch {rec.epoch} under another name")
            skipped.append(Skipped(name, why if "never deleted" in why else f"{why}: never deleted"))
            continue
        model, d = decided[name]
        if not d.record.stored:
            d = Decision(rec, True, NOT_STORED)
        elif not d.keep and name in tracked_failed:
            d = Decision(rec, True, TRACKED_FAILED)
        else:
            d = Decision(rec, d.keep, d.reason)
        groups.setdefault(model, []).append(d)
    return Plan(
        kind="local copies", location=location, keep=retention.keep,
        groups=tuple(GroupPlan(m, tuple(sorted(ds, key=lambda d: d.record.epoch)))
                     for m, ds in sorted(groups.items())),
        skipped=tuple(sorted(skipped, key=lambda s: s.name)),
    )


# ---------------------------------------------------------------------------------------------
# Planning one run (list and stat only)


@dataclass(frozen=True)
class Listing:
    """What ``decide_run`` needs about one run, as read from the store and the disk."""

    tracked: Mapping[str, int]  # hype_checkpoints: {name: size}
    tracked_location: str  # that folder's URI, credentials scrubbed
    local: tuple[CheckpointRecord, ...] = ()  # regular checkpoint files in the local folder
    local_skipped: tuple[Skipped, ...] = ()  # look-alikes there (links, directories, ...)
    local_dir: Path | None = None  # the local copies' folder, when it exists
    model: str | None = None  # tag hype.model_name
    best_epoch: int | None = None  # tag hype.best_epoch
    best_label: str = "best"
    can_delete: bool = True  # whether the store's artifact repository can delete at all

    def decide(self, keep: int, tracked_failed: Iterable[str] = ()) -> Decided:
        return decide_run(
            tracked=self.tracked, local=self.local, local_skipped=self.local_skipped, keep=keep,
            model=self.model, best_epoch=self.best_epoch, best_label=self.best_label,
            can_delete=self.can_delete, tracked_failed=tracked_failed,
            tracked_location=self.tracked_location,
            local_location=None if self.local_dir is None else str(self.local_dir),
        )


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    experiment: str  # its name
    status: str  # the run's status when planned: FINISHED, RUNNING, ...
    keep: int
    skip_reason: str | None = None  # the run is left alone entirely, and why
    listing: Listing | None = None  # None when skipped
    decided: Decided | None = None  # None when skipped
    warnings: tuple[str, ...] = ()
    store: TrackedCheckpoints | None = field(default=None, repr=False, compare=False)

    @property
    def planned(self) -> int:
        """How many deletions are planned, on both sides."""
        if self.decided is None:
            return 0
        local = self.decided.local.deletions if self.decided.local is not None else ()
        return len(self.decided.tracked.deletions) + len(local)


def _best_label(run: Run) -> str:
    monitor = run.data.tags.get(layout.TAG_MONITOR)
    value = run.data.tags.get(layout.TAG_BEST_VALUE)
    return f"best ({monitor}={value})" if monitor and value else "best"


def store_can_delete(artifact_uri: str, tracking_uri: str) -> bool:
    """Whether the artifact repository for ``artifact_uri`` implements deleting at all.

    MLflow's base ``delete_artifacts`` does nothing; a repository that keeps it would report
    every deletion as done and leave the files in place.
    """
    repo = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    return type(repo).delete_artifacts is not ArtifactRepository.delete_artifacts


def _local_listing(raw_dir: str | None) -> tuple[Path | None, tuple, tuple, str | None]:
    """(folder, records, look-alikes, warning) for the run's local checkpoint folder."""
    if not raw_dir:
        return None, (), (), None
    path = Path(raw_dir)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return None, (), (), f"local copies: {path} is not a plain directory; left alone"
    if not path.is_dir():
        return None, (), (), None  # trained elsewhere, or removed: nothing local to clean
    try:
        listing = plan_local(path, keep=None)  # only its records and look-alikes are used
    except CleanupError as e:
        return None, (), (), f"local copies: {e}; left alone"
    records = tuple(d.record for g in listing.groups for d in g.decisions)
    return path, records, listing.skipped, None


def plan_run(client: MlflowClient, sel: Selected, *, keep: int, include_running: bool = False) -> RunPlan:
    """List one run's tracked checkpoints and local copies, and decide; deletes nothing."""
    run = sel.run
    run_id, tags, status = run.info.run_id, run.data.tags, run.info.status

    def skip(reason: str) -> RunPlan:
        return RunPlan(run_id, sel.experiment, status, keep, skip_reason=reason)

    if run.info.lifecycle_stage == "deleted":
        return skip("the run is deleted (mlflow gc removes its artifacts)")
    if status in IN_PROGRESS and not include_running:
        return skip(f"status {status}: a trainer may still be writing (--include-running to clean it)")
    best_epoch = None
    raw_best = tags.get(layout.TAG_BEST_EPOCH)
    if raw_best is not None:
        try:
            best_epoch = int(raw_best)
        except ValueError:
            return skip(f"tag {layout.TAG_BEST_EPOCH} is {raw_best!r}, not an epoch: its best "
                        "checkpoint could not be protected")
    try:
        store = TrackedCheckpoints(run_id, layout.CHECKPOINT_FOLDER, client=client, retry=RETRY)
        tracked = store.list()
        can_delete = store_can_delete(store.artifact_uri, client.tracking_uri)
    except (StoreError, MlflowException) as e:
        return skip(f"cannot list its checkpoints: {scrub(str(e))}")
    local_dir, local, local_skipped, warning = _local_listing(tags.get(layout.TAG_CHECKPOINT_DIR))
    warnings = [warning] if warning else []
    listing = Listing(
        tracked=dict(tracked), tracked_location=store.uri, local=local, local_skipped=local_skipped,
        local_dir=local_dir, model=tags.get(layout.TAG_MODEL_NAME), best_epoch=best_epoch,
        best_label=_best_label(run), can_delete=can_delete,
    )
    decided = listing.decide(keep)
    if not can_delete and decided.retention.deletions:
        warnings.append(f"the artifact store {store.uri} cannot delete: tracked checkpoints are "
                        "left in place, only their local copies are deleted")
    return RunPlan(run_id, sel.experiment, status, keep, listing=listing, decided=decided,
                   warnings=tuple(warnings), store=store)


# ---------------------------------------------------------------------------------------------
# Acting


@dataclass(frozen=True)
class RunReport:
    plan: RunPlan
    tracked: Report | None = None  # None when the run was skipped
    local: Report | None = None  # None without a local folder

    @property
    def reports(self) -> tuple[Report, ...]:
        return tuple(r for r in (self.tracked, self.local) if r is not None)

    @property
    def failed(self) -> int:
        return sum(len(r.failed) for r in self.reports)

    def to_json(self) -> dict:
        p, listing = self.plan, self.plan.listing
        return {
            "run_id": p.run_id, "experiment": p.experiment, "status": p.status,
            "model": listing.model if listing else None,
            "best_epoch": listing.best_epoch if listing else None,
            "skipped": p.skip_reason, "warnings": list(p.warnings),
            "tracked": self.tracked.to_json() if self.tracked else None,
            "local_copies": self.local.to_json() if self.local else None,
        }


class DeleteRefused(CleanupError):
    """The store refused to delete a run's checkpoints (401/403): its user lacks the permission."""

    def __init__(self, run_id: str, experiment: str):
        self.run_id, self.experiment = run_id, experiment
        super().__init__(refused_message([self]))


def refused_message(errors: list[DeleteRefused]) -> str:
    """One line for every run whose deletes were refused."""
    runs = ", ".join(f"{e.run_id} (experiment {e.experiment!r})" for e in errors)
    return (f"the tracking server refused to delete checkpoints of run{'s' if len(errors) > 1 else ''} "
            f"{runs}: permission denied; deleting artifacts needs MANAGE permission on the experiment "
            f"(EDIT can only log them). Nothing of {'them' if len(errors) > 1 else 'it'} was deleted, "
            "local copies included")


def execute_run(plan: RunPlan, *, dry_run: bool, tick: Callable[[], None] = lambda: None) -> RunReport:
    """Delete what ``plan`` decided: tracked copies first, then the local copies, except those
    whose tracked deletion failed. ``tick`` is called after each file, for a progress bar.

    Raises DeleteRefused when the store refuses the run's first delete (401/403: the user may
    not delete here); the other files are then not tried, and nothing of the run is deleted.
    """
    if plan.decided is None:
        return RunReport(plan)

    def counted(delete):
        def run(name: str) -> None:
            try:
                delete(name)
            finally:
                tick()
        return run

    attempts: list[str] = []
    refused: list[StorePermissionError] = []

    def tracked_delete(name: str) -> None:
        if refused:  # the same user gets the same answer for every other file: ask once
            raise refused[0]
        attempts.append(name)
        try:
            plan.store.delete(name)
        except StorePermissionError as e:
            if len(attempts) == 1:  # refused from the start: the user's permission, not this file
                refused.append(e)
            raise

    tracked = execute(plan.decided.tracked, dry_run=dry_run, delete=counted(tracked_delete))
    if refused:  # nothing of this run was deleted, its local copies included
        raise DeleteRefused(plan.run_id, plan.experiment)
    local = None
    if plan.listing.local_dir is not None:
        # Decided again with the store's outcomes: a local copy outlives a failed tracked delete.
        failed = [o.decision.record.name for o in tracked.failed]
        again = plan.listing.decide(plan.keep, tracked_failed=failed)
        local = execute(again.local, dry_run=dry_run, delete=counted(local_deleter(plan.listing.local_dir)))
    return RunReport(plan, tracked, local)


# ---------------------------------------------------------------------------------------------
# Reporting


@dataclass(frozen=True)
class TrackedReport:
    uri: str  # redacted
    keep: int
    dry_run: bool
    runs: tuple[RunReport, ...]

    @property
    def ok(self) -> bool:
        return all(r.failed == 0 for r in self.runs)

    def _count(self, attr: str) -> tuple[int, int]:
        files = sum(len(getattr(rep, attr)) for r in self.runs for rep in r.reports)
        return files, sum(rep.bytes_freed for r in self.runs for rep in r.reports)

    def to_json(self) -> dict:
        deleted, freed = self._count("deleted")
        return {
            "kind": "tracking store", "tracking_uri": self.uri, "keep": self.keep,
            "dry_run": self.dry_run, "runs": [r.to_json() for r in self.runs],
            "summary": {"runs": len(self.runs),
                        "skipped_runs": sum(r.plan.skip_reason is not None for r in self.runs),
                        "deleted": deleted, "failed": sum(r.failed for r in self.runs),
                        "bytes": freed},
        }


def render_run(report: RunReport) -> str:
    p = report.plan
    head = f"run {p.run_id} (experiment {p.experiment!r}, {p.status})"
    if p.skip_reason is not None:
        return f"{head}: skipped, {p.skip_reason}"
    listing = p.listing
    best = "none recorded" if listing.best_epoch is None else str(listing.best_epoch)
    lines = [f"{head}: model {listing.model or '?'}, best epoch {best}"]
    lines += [f"  WARNING: {w}" for w in p.warnings]
    if not listing.tracked and not listing.local:
        lines.append("  no checkpoints")
        return "\n".join(lines)
    for rep in report.reports:
        body = render_text(rep).splitlines()[:-1]  # its own summary line is folded into ours
        lines += ["  " + line for line in body]
    if listing.local_dir is None:
        lines.append("  no local copies (no local checkpoint folder on this machine)")
    return "\n".join(lines)


def render_summary(report: TrackedReport) -> str:
    deleted, freed = report._count("deleted")
    skipped = sum(r.plan.skip_reason is not None for r in report.runs)
    failed = sum(r.failed for r in report.runs)
    runs = f"{len(report.runs)} run{'' if len(report.runs) == 1 else 's'}"
    runs += f" ({skipped} skipped)" if skipped else ""
    files = f"{deleted} file{'' if deleted == 1 else 's'}"
    if report.dry_run:
        text = f"{runs}: would delete {files}, would free {human_bytes(freed)} (dry run: nothing deleted)"
    else:
        text = f"{runs}: deleted {files}, freed {human_bytes(freed)}"
    if failed:
        text += f"; {failed} deletion{'' if failed == 1 else 's'} FAILED"
    return text
