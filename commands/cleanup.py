"""`python cli.py cleanup`: keep the newest N checkpoints per model, in a folder or in tracked runs."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click

# Past this many deletions (or runs to list) progress is shown: a bar on a terminal, else lines.
PROGRESS_MIN = 50


def _keep(ctx, param, value):
    if str(value).lower() == "all":
        return None  # keep all: an inventory with every checkpoint's reasons, nothing deleted
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (give N >= 1, or 'all')") from None
    if n < 1:
        raise click.BadParameter(
            f"{n} would delete every checkpoint; give N >= 1 (the newest N per model are kept)"
        )
    return n


def _bar(total: int, desc: str, unit: str):
    from hype.progress import bar

    # not a terminal (pipes, CI logs): no bar, a plain line every 10 s
    return bar(total=total, desc=desc, unit=unit, enabled=total >= PROGRESS_MIN, leave=False)


def _count(ctx, param, value):
    if value < 0:
        raise click.BadParameter(f"{value} is negative (give K >= 1, or 0 to turn it off)")
    return value


@click.command()
@click.option("--directory", type=click.Path(path_type=Path), default=None,
              help="Local mode: a run folder, or a folder whose run folders (DIR/*/, DIR/checkpoints/*/) "
                   "and flat checkpoint files are cleaned. [default: .]")
@click.option("--keep", default="20", show_default=True, callback=_keep, metavar="N|all",
              help="Keep the newest N checkpoints per run or model (by epoch, never by file time); "
                   "'all' keeps every one (and shows why each is kept).")
@click.option("--keep-best", type=int, default=1, show_default=True, callback=_count,
              help="Also keep the K best by the run's monitored metric (runs only); 0 turns it off.")
@click.option("--keep-every", type=int, default=0, show_default=True, callback=_count,
              help="Also keep epochs that are multiples of K (e.g. 50: epochs 50, 100, ...); 0: off.")
@click.option("--dry-run", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              metavar="[true|false]",
              help="Print what would be deleted and why each checkpoint is kept; delete nothing. "
                   "(--dry-run alone means true; the value form serves MLproject.)")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report instead.")
@click.option("--run-id", default=None, help="Tracking-store mode: clean this run.")
@click.option("--experiment", default=None, help="Tracking-store mode: clean every run of this experiment.")
@click.option("--all-experiments", is_flag=True,
              help="Tracking-store mode: clean every run of every experiment.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here]. "
                   "In local mode it replaces the store a run folder's manifest names.")
@click.option("--include-running", is_flag=True,
              help="Also clean runs whose status is RUNNING (a trainer may still be writing them).")
@click.pass_context
def cleanup(ctx, directory, keep, keep_best, keep_every, dry_run, as_json, run_id, experiment,
            all_experiments, tracking_uri, include_running):
    """Delete old epoch checkpoints, with the trainer's own retention rules.

    \b
    Local mode (default): run folders (with hype_manifest.sqlite) in --directory, DIR/*/ and
    DIR/checkpoints/*/, each cleaned as its run (local copies and tracked copies, in the store
    its manifest names); and flat files <model>_epoch<N>.pth or <model>.pth.<N> in DIR itself,
    newest --keep per model.
    Tracking-store mode (--run-id, --experiment or --all-experiments): each run's tracked
    checkpoints (artifact folder hype_checkpoints) and their local copies, where verified.

    \b
    A checkpoint is kept if any policy keeps it: newest --keep, best --keep-best, every
    --keep-every. Never deleted: the final model (<model>.pth, hype_model/, the MLflow model);
    a checkpoint not confirmed stored; a file the run's manifest does not prove is its own;
    symlinks and directories; runs still RUNNING (unless --include-running). Exits non-zero if
    anything asked for could not be done; the rest still happens.

    \b
    Under `mlflow run` (MLFLOW_RUN_ID set) its run records the counts (runs, checkpoints deleted
    and kept, bytes freed) in the experiment cleaned; --experiment '' names the experiment
    `mlflow run` was given (hype if none). Its own run is not a target.
    """
    from tracker.store import project_run
    from tracker.store.errors import TrackingError, TrackingUnavailable

    try:
        project = project_run.attach()
        if experiment == "" and project is not None:
            experiment = project.chosen_experiment or project_run.DEFAULT_EXPERIMENT
    except (TrackingError, TrackingUnavailable) as e:
        raise click.ClickException(str(e)) from None
    if experiment == "":
        raise click.BadParameter("is empty; '' is for MLproject (the experiment `mlflow run` was "
                                 "given), outside `mlflow run` name one", param_hint="--experiment")
    with project_run.recording(project):
        _cleanup(ctx, project, directory, keep, keep_best, keep_every, dry_run, as_json, run_id,
                 experiment, all_experiments, tracking_uri, include_running)


def _cleanup(ctx, project, directory, keep, keep_best, keep_every, dry_run, as_json, run_id, experiment,
             all_experiments, tracking_uri, include_running):
    from tracker.policy.retention import Retention

    selections = [s for s, given in (("--run-id", run_id), ("--experiment", experiment),
                                     ("--all-experiments", all_experiments)) if given]
    if len(selections) > 1:
        raise click.UsageError(f"give only one of {', '.join(selections)}")
    if selections and directory is not None:
        raise click.UsageError(f"--directory is for local mode; {selections[0]} cleans tracked runs")
    retention = Retention(keep, keep_best, keep_every)
    # MLflow's HTTP client retries on its own for minutes; the cleanup's RETRY bounds the wait.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    if selections:
        own = project.original.info.run_id if project is not None else None
        results = _tracked(run_id, experiment, all_experiments, tracking_uri, retention, dry_run,
                           include_running, own)
    else:
        results = _local(directory or Path("."), tracking_uri, retention, dry_run, include_running, as_json)
    from tracker.cleanup import render

    done = sum(d.status == "deleted" for r in results if r.applied for d in r.applied.deletions)
    problems = [p for r in results for p in r.problems]
    if problems and not done and not dry_run and len(problems) == 1:
        raise click.ClickException(problems[0])  # nothing happened: the one reason is the report
    if as_json:
        report = render.to_json(results, dry_run=dry_run, policies=retention.describe())
        click.echo(json.dumps(report, indent=2))
    else:
        for r in results:
            click.echo(render.render_result(r))
        if results:
            click.echo(render.render_summary(results, dry_run))
    if project is not None:
        _record(project, results, dry_run, experiment, retention)
    if not all(r.ok for r in results):
        click.echo("Error: " + _first_problem(results), err=True)
        ctx.exit(1)


def cleanup_metrics(totals: dict, kept: int) -> dict:
    """What a cleanup did, as metrics of `mlflow run`'s run; a dry run's under other names, so
    that no chart adds what was only planned to what was freed."""
    done = {"checkpoints_deleted": totals["deleted"], "bytes_freed": totals["bytes"]}
    if totals["dry_run"]:
        done = {"checkpoints_to_delete": totals["deleted"], "bytes_to_free": totals["bytes"]}
    return {"runs": totals["targets"], "runs_skipped": totals["skipped"], "checkpoints_kept": kept,
            **done, "deletions_failed": totals["failed"], "problems": totals["problems"]}


def _record(project, results, dry_run, experiment, retention) -> None:
    """The counts into `mlflow run`'s run, placed in the experiment cleaned (--run-id: that run's;
    a folder: hype)."""
    from tracker.cleanup import render
    from tracker.layout import TAG_NOTE
    from tracker.store.errors import TrackingError
    from tracker.store.project_run import DEFAULT_EXPERIMENT

    experiment = experiment or next((r.target.experiment for r in results if r.target.experiment),
                                    DEFAULT_EXPERIMENT)
    kept = sum(row["status"] == "kept" for r in results for row in render.rows(r))
    summary = render.render_summary(results, dry_run) if results else "nothing to clean"
    try:
        project.place(experiment)
        project.record("cleanup", metrics=cleanup_metrics(render.totals(results, dry_run), kept),
                       params={"cleaned_experiment": experiment, "policies": retention.describe()},
                       tags={TAG_NOTE: f"Cleanup of experiment {experiment!r}: {summary}"})
    except TrackingError as e:
        raise click.ClickException(str(e)) from None


def _looks_like_run_id(name: str) -> bool:
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def _first_problem(results) -> str:
    for r in results:
        if r.problems:
            more = sum(len(x.problems) for x in results) - 1
            return r.problems[0] + (f" (and {more} more, listed above)" if more else "")
    return "some deletions failed (listed above); the others were done"


def _run_all(targets, dry_run):
    from tracker.cleanup.targets import execute

    with _bar(0 if dry_run else sum(t.planned for t in targets), "deleting", "file") as bar:
        results = [execute(t, dry_run=dry_run, tick=lambda d: bar.update()) for t in targets]
    for t in targets:
        if t.checkpoints is not None:
            t.checkpoints.close()
    return results


def _local(directory, tracking_uri, retention, dry_run, include_running, as_json):
    from tracker.checkpoints import folder as run_folder
    from tracker.cleanup import local, runs, targets
    from tracker.store.errors import TrackingError

    try:
        found = local.discover(directory)
    except runs.CleanupError as e:
        raise click.ClickException(str(e)) from None
    if found.empty:
        click.echo(found.nothing_found(), err=True)
        return []
    planned = targets.plan_flat(directory, retention, found.flat_models)
    clients = {}
    seen: dict[str, Path] = {}
    for f in found.run_folders:
        if f.manifest is not None and f.manifest.run_id in seen:
            # a copy (a backup, say): one run has one folder; which is real is for a person to say
            planned.append(targets.Target(
                "run", f"run folder {f.folder}", local_location=str(f.folder),
                problems=(f"{f.folder} holds a manifest of run {f.manifest.run_id}, as "
                          f"{seen[f.manifest.run_id]} does: left alone (clean one with --directory)",)))
            continue
        if f.manifest is not None:
            seen[f.manifest.run_id] = f.folder
        if f.manifest is None:
            planned.append(targets.Target("run", f"run folder {f.folder}", local_location=str(f.folder),
                                          problems=(f.problem,)))
            continue
        b = f.manifest.binding
        uri = tracking_uri or b.tracking_uri
        try:
            if uri not in clients:
                clients[uri] = runs.open_client(uri)
            sel = runs.select_runs(clients[uri], run_id=b.run_id)[0]
        except (runs.CleanupError, TrackingError) as e:
            planned.append(targets.Target("run", f"run {b.run_id} (folder {f.folder})", run_id=b.run_id,
                                          local_location=str(f.folder),
                                          problems=(f"{e}; nothing in {f.folder} was deleted "
                                                    "(--tracking-uri names the run's store)",)))
            continue
        planned.append(targets.plan_run(clients[uri], sel, retention=retention,
                                        include_running=include_running,
                                        folder=run_folder.RunFolder(f.folder, f.manifest)))
    if found.unbound and not as_json:
        for p in found.unbound:
            how = (f"--run-id {p.name} (its run's rules: best kept)" if _looks_like_run_id(p.name)
                   else f"--directory {p} (name rules)")
            click.echo(f"{p}: checkpoints but no manifest, so not a run folder; clean it with: "
                       f"python cli.py cleanup {how}", err=True)
    return _run_all(planned, dry_run)


def _tracked(run_id, experiment, all_experiments, tracking_uri, retention, dry_run, include_running,
             own=None):
    from tracker.cleanup import runs, targets
    from tracker.layout import PROJECT_ROOT
    from tracker.store.errors import TrackingError
    from tracker.store.project_run import TAG_COMMAND
    from tracker.store.uri import resolve_tracking_uri

    try:
        uri = resolve_tracking_uri(tracking_uri)
        client = runs.open_client(uri)
        selected = runs.select_runs(client, run_id=run_id, experiment=experiment,
                                    all_experiments=all_experiments)
        if run_id is None:  # `mlflow run`'s run for us, and what earlier cleanups and evaluations
            selected = [s for s in selected  # recorded: no checkpoints, nothing to report
                        if s.run.info.run_id != own and TAG_COMMAND not in s.run.data.tags]
        with _bar(len(selected), "listing runs", "run") as bar:
            planned = []
            for sel in selected:
                planned.append(targets.plan_run(client, sel, retention=retention,
                                                include_running=include_running,
                                                root=PROJECT_ROOT / "checkpoints"))
                bar.update()
    except (runs.CleanupError, TrackingError) as e:
        raise click.ClickException(str(e)) from None
    if not selected:
        click.echo(f"no runs in experiment {experiment!r}" if experiment else "no runs", err=True)
    if run_id is not None:  # the one run asked for: being skipped means it was not cleaned
        planned = [replace(t, problems=(*t.problems, f"run {t.run_id} was not cleaned: {t.skip}"))
                   if t.skip else t for t in planned]
    return _run_all(planned, dry_run)
