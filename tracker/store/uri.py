"""Tracking URIs: which store a command talks to, checked before anything is created.

One parser for SQLite paths (``sqlite_path``) serves the store's lock, cleanup and the
artifact location; one redactor (tracker.store.redact) serves every message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from tracker.layout import DEFAULT_DB
from tracker.store.errors import TrackingError
from tracker.store.redact import one_line, redact


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



def sqlite_path(uri: str) -> Path | None:
    """The db file of a sqlite: URI, resolved; None for other schemes and in-memory dbs.

    Relative paths are relative to the working directory, as SQLite itself resolves them.
    Raises TrackingError for a sqlite URI that SQLAlchemy cannot parse.
    """
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(uri).database
    except Exception as exc:
        raise TrackingError(f"tracking URI {redact(uri)!r} is malformed: {one_line(exc)}") from None
    if not database or database == ":memory:" or "mode=memory" in uri:
        return None
    return Path(database).expanduser().resolve()


def artifact_location_for(uri: str, experiment: str) -> str | None:
    """For an embedded SQLite store, keep artifacts beside the database (under the project for
    the default); a server decides its own (proxied) location."""
    db = sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("_") or "default"
    return (db.resolve().parent / "mlartifacts" / slug).as_uri()

