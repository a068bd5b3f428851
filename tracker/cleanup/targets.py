"""What one cleanup works on, planned and carried out by the lifecycle engine the trainer uses.

A target is either
- a run (tracking-store mode, or a run folder found by local mode through its manifest): its
  tracked checkpoints and, when a folder is verified as the run's, its local copies, decided
  by the same policies as while training (newest N, best K by the run's monitored metric as
  the store's history gives it, every k-th, early stopping's best), then bookkept in the
  run's tags and manifest; or
- a flat folder of the seed's files (no manifest): one target per model, today's name rules.

What is never deleted: the final model and anything outside ``hype_checkpoints``; a kept
checkpoint; one not confirmed stored; a local file the run's records do not prove is its own;
anything of a RUNNING run unless asked; anything at all in a dry run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.checkpoints import folder as run_folder
from tracker.checkpoints.deleter import Deletion
from tracker.checkpoints.lifecycle import Applied, Plan, RunCheckpoints, retained_tags
from tracker.checkpoints.manifest import ManifestError
from tracker.checkpoints.models import CheckpointModels
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.cleanup.runs import IN_PROGRESS, RETRY, Selected
from tracker.policy import resume as resume_policy
from tracker.policy import stopping
from tracker.policy.retention import Protect, Retention, monitored_values
from tracker.store.errors import StoreError, StorePermissionError
from tracker.store.redact import redact
from tracker.store.retry import call_with_retry


@dataclass(frozen=True)
class Target:
    kind: str  # "run" or "folder"
    title: str  # how reports name it
    model: str | None = None
    run_id: str | None = None
    status: str | None = None  # the run's status when planned
    experiment: str | None = None
    tracked_location: str | None = None  # the tracked folder's URI, redacted
    local_location: str | None = None  # the verified local folder, if any
    best_epoch: int | None = None
    policies_text: str = ""  # "newest 10 + best 1"
    skip: str | None = None  # left alone entirely, and why (not an error)
    problems: tuple[str, ...] = ()  # what could not be done that the user asked for: exit 1
    warnings: tuple[str, ...] = ()
    plan: Plan | None = None
    checkpoints: RunCheckpoints | None = field(default=None, repr=False, compare=False)
    current_tags: dict = field(default_factory=dict, repr=False, compare=False)  # the run's, as planned
    client: MlflowClient | None = field(default=None, repr=False, compare=False)

    @property
    def planned(self) -> int:
        return 0 if self.plan is None else len(self.plan.deletions)


@dataclass(frozen=True)
class Result:
    target: Target
    applied: Applied | None = None  # None when skipped
    problems: tuple[str, ...] = ()  # the target's, and any met while deleting

    @property
    def failed(self) -> list[Deletion]:
        return self.applied.failed if self.applied else []

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed


def _best_epoch(tags: dict) -> tuple[int | None, str | None]:
    raw = tags.get(layout.TAG_BEST_EPOCH)
    if raw is None:
        return None, None
    try:
        return int(raw), None
    except ValueError:
        return None, (f"tag {layout.TAG_BEST_EPOCH} is {raw!r}, not an epoch: its best checkpoint "
                      "could not be protected")


def plan_run(client: MlflowClient, sel: Selected, *, retention: Retention, include_running: bool = False,
             folder: run_folder.RunFolder | None = None, root: Path | None = None) -> Target:
    """Plan one run: its tracked folder and its local folder (``folder`` when local mode
    already verified it; else the run's tag, verified, or ``root/<run_id>``). Deletes nothing."""
    run = sel.run
    run_id, tags, status, p = run.info.run_id, run.data.tags, run.info.status, run.data.params
    base = Target("run", f"run {run_id} (experiment {sel.experiment!r}, {status})", run_id=run_id,
                  status=status, experiment=sel.experiment, client=client,
                  model=tags.get(layout.TAG_MODEL_NAME) or p.get("model_name"))
    if run.info.lifecycle_stage == "deleted":
        return replace(base, skip="the run is deleted (mlflow gc removes its artifacts)")
    if status in IN_PROGRESS and not include_running:
        return replace(base, skip=f"status {status}: a trainer may still be writing "
                                  "(--include-running to clean it)")
    if base.model is None:
        return replace(base, skip="not a hype run (no hype.model_name tag): left alone")
    best, bad = _best_epoch(tags)
    if bad:
        return replace(base, skip=bad)
    try:  # what its resumes changed (min_delta: what best K counts), as the trainer reads it
        p = resume_policy.effective(p, tags.get(layout.TAG_RESUMED_PARAMS))
    except ValueError as e:
        return replace(base, skip=f"its resume record (tag {layout.TAG_RESUMED_PARAMS}) is damaged: {e}")
    try:
        store = TrackedCheckpoints(run_id, layout.CHECKPOINT_FOLDER, client=client, retry=RETRY)
        listing = store.list()
    except (StoreError, MlflowException) as e:
        return replace(base, problems=(f"cannot list its checkpoints: {redact(str(e))}",))
    if folder is None:
        folder = run_folder.locate(run_id, hint=tags.get(layout.TAG_CHECKPOINT_DIR), root=root)
    problems = (f"local copies: {folder.problem}",) if folder.problem else ()
    warnings = (folder.note,) if folder.note else ()
    monitor = p.get("monitor") or tags.get(layout.TAG_MONITOR) or "map"  # params cannot be edited
    mode = p.get("mode") or stopping.infer_mode(monitor)
    start = int(p.get("burnin", 0)) + 1  # as the trainer: burn-in evaluations are not "best"
    try:
        history = call_with_retry(f"read {monitor} of run {run_id}",
                                  lambda: client.get_metric_history(run_id, monitor), RETRY)
    except StoreError as e:
        return replace(base, problems=(f"cannot read its {monitor} history: {e}",))
    values = monitored_values([(m.step, m.value) for m in history], start=start)
    policies = retention.policies(mode=mode, monitor=monitor, min_delta=float(p.get("min_delta", 0) or 0),
                                  history=values)
    if best is not None and retention.keep_best and retention.keep is not None:
        value = tags.get(layout.TAG_BEST_VALUE)
        policies.append(Protect(frozenset({best}), f"best ({monitor}={value})" if value else "best"))
    ck = RunCheckpoints(run_id, base.model, store=store, folder=folder.folder, manifest=folder.manifest,
                        legacy_local=folder.legacy,
                        models=CheckpointModels(client, run_id, run.info.experiment_id, retry=RETRY))
    try:
        plan = ck.plan(policies, listing=listing, values=values)
    except ManifestError as e:
        ck.close()
        return replace(base, problems=(str(e),))
    return replace(base, current_tags=dict(tags), tracked_location=store.uri, best_epoch=best,
                   policies_text=retention.describe(),
                   local_location=str(folder.folder) if folder.folder else None, problems=problems,
                   warnings=warnings, plan=plan, checkpoints=ck)


def plan_flat(directory: Path, retention: Retention, models: list[str]) -> list[Target]:
    """The seed's flat folder: one target per model, decided by name and epoch (no store)."""
    flat = Retention(retention.keep, 0, retention.keep_every)  # no metrics here: no "best"
    out = []
    for model in models:
        ck = RunCheckpoints("", model, store=None, folder=directory, manifest=None)
        plan = ck.plan(flat.policies())
        out.append(Target("folder", f"{directory}: model {model}", model=model, local_location=str(directory),
                          policies_text=flat.describe(), plan=plan, checkpoints=ck))
    return out


def execute(target: Target, *, dry_run: bool, tick: Callable[[Deletion], None] = lambda d: None) -> Result:
    """Carry out the target's plan (or only report it), then bookkeep the run's tags."""
    if target.plan is None or target.skip is not None:
        return Result(target, None, target.problems)
    applied = target.checkpoints.apply(target.plan, dry_run=dry_run, confirm=True, tick=tick)
    problems = list(target.problems)
    if isinstance(applied.error, StorePermissionError):
        problems.append(refused_message(target, sum(d.status == "deleted" for d in applied.deletions)))
    elif applied.error is not None:
        problems.append(f"stopped: {applied.error}")
    current = target.current_tags
    tags = retained_tags(applied.retained)
    if target.kind == "run" and not dry_run and any(current.get(k) != v for k, v in tags.items()):
        # after any deletion, and whenever the tags no longer say what the run holds (edited,
        # files deleted by hand, a cleanup whose own tag update failed)
        try:
            call_with_retry(f"update the tags of run {target.run_id}", lambda: target.client.log_batch(
                target.run_id, tags=[RunTag(k, v) for k, v in tags.items()]), RETRY)
        except StoreError as e:
            problems.append(f"deleted, but its tags could not be updated: {e}")
    return Result(target, applied, tuple(problems))


def refused_message(target: Target, deleted: int) -> str:
    done = ("Nothing of it was deleted, local copies included" if not deleted else
            f"{deleted} checkpoint{'' if deleted == 1 else 's'} went before the refusal; the rest "
            "were left as they were, local copies included")
    return (f"the tracking server refused to delete checkpoints of run {target.run_id} (experiment "
            f"{target.experiment!r}): permission denied; deleting artifacts needs MANAGE permission on "
            f"the experiment (EDIT can only log them). {done}")

