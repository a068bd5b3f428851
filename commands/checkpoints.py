"""`python cli.py checkpoints`: the retained checkpoints of runs, why each is kept, and where."""

from __future__ import annotations

import json

import click


@click.command(short_help="List runs' retained checkpoints: metrics, why kept, where, URI.")
@click.argument("run_id", required=False)
@click.option("--experiment", default=None, help="Every run of this experiment [default: hype].")
@click.option("--tracking-uri", default=None,
              help="[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: a list of runs.")
def checkpoints(run_id, experiment, tracking_uri, as_json):
    """A table per run of its retained checkpoints: epoch, map, mean rank, loss, size, the
    policies that keep it (newest N, best, every k), where it lives (local, tracked) and whether
    the copies agree with the run's records, and its URI (models:/<id>) for evaluate, export and
    serve. Reads only; the run's own retention rules decide the "kept by" column."""
    from tracker.cleanup import runs
    from tracker.cleanup.listing import describe_run, render
    from tracker.store.errors import StoreError, TrackingError
    from tracker.store.uri import resolve_tracking_uri

    if run_id is not None and experiment is not None:
        raise click.UsageError("give RUN_ID or --experiment, not both")
    try:
        client = runs.open_client(resolve_tracking_uri(tracking_uri))
        selected = runs.select_runs(client, run_id=run_id,
                                    experiment=None if run_id else (experiment or "hype"))
        described = [describe_run(client, sel) for sel in selected]
    except (runs.CleanupError, TrackingError, StoreError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(described, indent=1))
        return
    if not described:
        click.echo(f"no runs in experiment {experiment or 'hype'!r}")
    for run in described:
        click.echo(render(run))
