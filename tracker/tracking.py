"""Where runs are tracked: the tracking URI, the experiment, and what a run records up front."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # importing mlflow costs ~0.8 s; `cli.py --help` should not pay it
    from mlflow.tracking import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = PROJECT_ROOT / "mlflow.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI picks its view from this tag
EXPERIMENT_KIND = "custom_model_development"  # the model-training view, not the GenAI one


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what and how to go on."""


def resolve_tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the embedded SQLite store in the project."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    check_uri(uri)
    return uri


def check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: no host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: bad port") from None
    elif parts.scheme.startswith("sqlite"):
        if not uri.startswith("sqlite:///"):
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: expected sqlite:///PATH")
    elif parts.scheme.startswith(("postgresql", "mysql", "databricks", "file")) or parts.scheme == "":
        return
    else:
        raise TrackingError(
            f"unsupported tracking URI {redact(uri)!r} (use http(s)://, sqlite:///, postgresql+psycopg2://)"
        )


def redact(uri: str) -> str:
    """The URI without user:password@, for messages and logs."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def artifact_location_for(uri: str, experiment: str) -> str | None:
    """For an embedded SQLite store, keep artifacts beside the database (under the project for
    the default); a server decides its own (proxied) location."""
    db = sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("_") or "default"
    return (db.resolve().parent / "mlartifacts" / slug).as_uri()


def get_or_create_experiment(client: MlflowClient, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {name!r} is deleted; restore it or choose another --experiment")
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location_for(uri, name),
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )
    except Exception:
        # Another process created it first: that one is ours too.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def tune_sqlite_commits() -> None:
    """Make each SQLite commit of the embedded store cheap: WAL journal, synchronous=NORMAL.

    MLflow commits several times per log_batch; with the default rollback journal each commit
    costs two fsyncs (about 10 ms each here), which made tracking cost more than a mammal epoch.
    In WAL mode with synchronous=NORMAL a commit survives a killed process (kill -9, Ctrl+C);
    only an OS crash or power loss may lose the last commits, never corrupt the database.
    """
    global _SQLITE_TUNED
    if _SQLITE_TUNED:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    _SQLITE_TUNED = True


_SQLITE_TUNED = False
