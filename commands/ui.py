"""`python cli.py ui`: the MLflow UI on 127.0.0.1 for the project's tracking store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click

HOST = "127.0.0.1"  # never beyond this machine: the UI has no authentication
DEFAULT_PORT = 5000
STOP_TIMEOUT_S = 10
MAX_LINKS = 5  # hype experiments printed with a link, newest first; the home page lists all
# A fresh browser profile opens MLflow 3.17's pages in its GenAI view, whatever the experiment's
# kind tag says (tracker/layout.py): the printed links say otherwise, and this says what sticks.
SWITCH_HINT = ("(MLflow 3.17 shows GenAI pages until this browser's sidebar switch is set to "
               "\"Model training\" once; the links above open the training runs directly)")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole group (mlflow forks uvicorn), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # start_new_session: its pid is its group's id
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _experiment_links(client, base: str) -> list[str]:
    """One line per hype experiment (tagged with our kind), newest first: its training runs."""
    from tracker.layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ui_link
    from tracker.store.redact import one_line

    try:
        exps = client.search_experiments(
            max_results=MAX_LINKS, order_by=["last_update_time DESC"],
            filter_string=f"tags.`{EXPERIMENT_KIND_TAG}` = '{EXPERIMENT_KIND}'")
    except Exception as e:  # only links: the UI itself still starts
        return [f"  (could not list the experiments: {one_line(e)})"]
    return [f"  training runs of {e.name!r}: {ui_link(base, e.experiment_id)}" for e in exps]


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # runs the `finally` that stops the server


@click.command(short_help="Start the MLflow UI on 127.0.0.1 and print its URL.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port on 127.0.0.1.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
def ui(port, tracking_uri):
    """Start the MLflow UI (`mlflow ui --workers 1`) on 127.0.0.1 and print its URL, with a link
    to the training runs of each hype experiment; Ctrl-C stops it.

    One worker: by default the server starts about 15 processes, far too many for a laptop.
    """
    from tracker.store.errors import TrackingError, TrackingUnavailable
    from tracker.store.open import READ_PROBE, resolve_and_open
    from tracker.store.redact import redact
    from tracker.store.uri import sqlite_path

    try:
        # train's checks, so that `mlflow ui` is not the one to find a bad store (in a traceback)
        uri, client = resolve_and_open(tracking_uri, create=False, probe=READ_PROBE)
    except (TrackingError, TrackingUnavailable) as e:
        raise click.ClickException(str(e)) from None
    cmd = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
           "--host", HOST, "--port", str(port), "--workers", "1"]
    db = sqlite_path(uri)
    if db is not None:
        # Runs keep their own (file:) artifact locations; this is only for experiments made in the UI.
        cmd += ["--artifacts-destination", str(db.parent / "mlartifacts")]
    if not _port_free(port):
        raise click.ClickException(f"port {port} on {HOST} is in use; choose another with --port")
    env = dict(os.environ)
    # `mlflow ui` starts uvicorn through PATH: the venv's bin must come first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no background job workers
    base = f"http://{HOST}:{port}"
    click.echo(f"MLflow UI for {redact(uri)}: {base}  (Ctrl-C to stop)")
    for line in _experiment_links(client, base):
        click.echo(line)
    click.echo(SWITCH_HINT)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    # Its own process group, so that stopping it reaches the uvicorn process it forks.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop(proc)
    if code:
        raise click.ClickException(f"mlflow ui exited with code {code}")
