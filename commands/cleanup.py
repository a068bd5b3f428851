"""`python cli.py cleanup`: keep the newest N checkpoints per model, in a folder or in tracked runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

# Past this many deletions (or runs to list) a progress bar is shown on a terminal.
PROGRESS_MIN = 50


def _keep(ctx, param, value):
    if value < 1:
        raise click.BadParameter(
            f"{value} would delete every checkpoint; give N >= 1 (the newest N per model are kept)"
        )
    return value


def _bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (pipes, CI logs)
    return tqdm(total=total, desc=desc, unit=unit, disable=None if total >= PROGRESS_MIN else True,
                leave=False)


@click.command()
@click.option("--directory", type=click.Path(path_type=Path), default=None,
              help="Local mode: the folder whose checkpoints are rotated (not recursive). [default: .]")
@click.option("--keep", type=int, default=20, show_default=True, callback=_keep,
              help="Keep the newest N checkpoints per model (by epoch number, never by file time).")
@click.option("--dry-run", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              metavar="[true|false]",
              help="Print what would be deleted and the bytes it would free; delete nothing. "
                   "(--dry-run alone means true; the value form serves MLproject.)")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report instead.")
@click.option("--run-id", default=None, help="Tracking-store mode: clean this run.")
@click.option("--experiment", default=None, help="Tracking-store mode: clean every run of this experiment.")
@click.option("--all-experiments", is_flag=True,
              help="Tracking-store mode: clean every run of every experiment.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--include-running", is_flag=True,
              help="Also clean runs whose status is RUNNING (a trainer may still be writing them).")
@click.pass_context
def cleanup(ctx, directory, keep, dry_run, as_json, run_id, experiment, all_experiments, tracking_uri,
            include_running):
    """Delete old epoch checkpoints: keep the newest --keep per model.

    \b
    Local mode (default): files named <model>_epoch<N>.pth or <model>.pth.<N> in --directory.
    Tracking-store mode (--run-id, --experiment or --all-experiments): each run's tracked
    checkpoints (artifact folder hype_checkpoints) and their local copies, where they exist.

    \b
    Never deleted: the final model (<model>.pth, hype_model/, the MLflow model); a run's best
    checkpoint (tag hype.best_epoch); files that do not match the two patterns exactly;
    symlinks and directories; a local checkpoint the store does not hold; runs still RUNNING
    (unless --include-running). Exits non-zero if any deletion failed; the others still happen.
    """
    selections = [s for s, given in (("--run-id", run_id), ("--experiment", experiment),
                                     ("--all-experiments", all_experiments)) if given]
    if len(selections) > 1:
        raise click.UsageError(f"give only one of {', '.join(selections)}")
    if selections:
        if directory is not None:
            raise click.UsageError(f"--directory is for local mode; {selections[0]} cleans tracked runs")
        ok = _tracked(run_id, experiment, all_experiments, tracking_uri, keep, dry_run, as_json,
                      include_running)
    else:
        for flag, given in (("--tracking-uri", tracking_uri), ("--include-running", include_running)):
            if given:
                raise click.UsageError(f"{flag} needs --run-id, --experiment or --all-experiments")
        ok = _local(directory or Path("."), keep, dry_run, as_json)
    if not ok:
        click.echo("Error: some deletions failed (listed above); the others were done", err=True)
        ctx.exit(1)


def _counted(delete, bar):
    def run(name: str) -> None:
        try:
            delete(name)
        finally:
            bar.update()
    return run


def _local(directory: Path, keep: int, dry_run: bool, as_json: bool) -> bool:
    from tracker.cleanup.local import CleanupError, execute, local_deleter, plan_local, render_text

    try:
        plan = plan_local(directory, keep)
    except CleanupError as e:
        raise click.ClickException(str(e)) from None
    with _bar(0 if dry_run else len(plan.deletions), "deleting", "file") as bar:
        report = execute(plan, dry_run=dry_run, delete=_counted(local_deleter(plan.location), bar))
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else render_text(report))
    return report.ok


def _tracked(run_id, experiment, all_experiments, tracking_uri, keep, dry_run, as_json,
             include_running) -> bool:
    from tracker.cleanup import runs as ct
    from tracker.cleanup.local import CleanupError
    from tracker.store.errors import TrackingError
    from tracker.store.redact import redact
    from tracker.store.uri import resolve_tracking_uri

    # MLflow's HTTP client retries on its own for minutes; ct.RETRY bounds the wait instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        uri = resolve_tracking_uri(tracking_uri)
        client = ct.open_client(uri)
        selected = ct.select_runs(client, run_id=run_id, experiment=experiment,
                                  all_experiments=all_experiments)
        with _bar(len(selected), "listing runs", "run") as bar:
            plans = []
            for sel in selected:
                plans.append(ct.plan_run(client, sel, keep=keep, include_running=include_running))
                bar.update()
    except (CleanupError, TrackingError) as e:
        raise click.ClickException(str(e)) from None
    if not selected:
        click.echo(f"no runs in experiment {experiment!r}" if experiment else "no runs", err=True)
    runs, refused = [], []
    with _bar(0 if dry_run else sum(p.planned for p in plans), "deleting", "file") as bar:
        for p in plans:
            try:
                runs.append(ct.execute_run(p, dry_run=dry_run, tick=bar.update))
            except ct.DeleteRefused as e:  # no permission: one line below, not one per file
                refused.append(e)
    if refused and not runs:
        raise click.ClickException(ct.refused_message(refused))
    report = ct.TrackedReport(redact(uri), keep, dry_run, tuple(runs))
    if as_json:
        for r in runs:
            for w in r.plan.warnings:
                click.echo(f"WARNING: {w}", err=True)
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for r in runs:
            click.echo(ct.render_run(r))
        click.echo(ct.render_summary(report))
    if refused:
        raise click.ClickException(ct.refused_message(refused))
    return report.ok
