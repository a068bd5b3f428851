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
from tracker.store.redact import one_line, redact, userinfo_of


def resolve_tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the embedded SQLite store in the project."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    check_uri(uri)
    return uri


SQL_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy URLs: scheme[+driver]://
SUPPORTED = "use http(s)://HOST, sqlite:///PATH or postgresql+psycopg2://USER@HOST/DB"


def check_uri(uri: str) -> None:
    """Refuse, from the text alone, a tracking URI hype cannot use; TrackingError says why.

    The file store (a ``file:`` URI or a plain path) is refused: MLflow 3 deprecated it and
    raises unless MLFLOW_ALLOW_FILE_STORE is set, and hype's SQLite store does what it did.
    """
    if any(c.isspace() for c in uri):
        # Not shown: a space cuts the URI where redact looks for its password.
        raise TrackingError("malformed tracking URI: it contains whitespace (percent-encode it, "
                            "e.g. a space as %20)")
    try:
        parts = urlsplit(uri)
    except ValueError as e:  # an unbalanced "[" in an IPv6 host, ...
        raise TrackingError(f"malformed tracking URI {redact(uri)!r}: {e}") from None
    scheme = parts.scheme.lower()
    userinfo = userinfo_of(uri) or ""
    if uri == "databricks" or scheme.startswith("databricks"):
        return  # a Databricks workspace (its profile says where)
    if scheme in ("", "file"):
        path = (parts.path if scheme else uri).rstrip("/") or "."
        # a database beside the runs folder (./mlruns -> ./mlflow.db), as MLflow suggests
        db = path if path.endswith((".db", ".sqlite")) else os.path.join(os.path.dirname(path), "mlflow.db")
        raise TrackingError(
            f"tracking URI {redact(uri)!r} names MLflow's file store (a plain path or file:), "
            f"which MLflow 3 deprecated and hype does not support: use a SQLite database, e.g. "
            f"sqlite:///{db} (`mlflow migrate-filestore` moves existing runs into one)")
    if scheme in ("http", "https"):
        # urllib ends the host at the first "/", "?" or "#": a password holding one would be
        # read as a host and a port (and sent to whatever that names)
        if any(c in userinfo for c in "/?#"):
            raise TrackingError(
                f"malformed tracking URI {redact(uri)!r}: its user name or password holds '/', "
                "'?' or '#'; percent-encode them (%2F, %3F, %23), or an '@' in its path (%40)")
        if not parts.hostname:
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: no host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: bad port") from None
    elif scheme.startswith("sqlite"):
        if not uri.startswith("sqlite:///"):
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: expected sqlite:///PATH")
    elif scheme.split("+")[0] in SQL_SCHEMES:
        # SQLAlchemy ends the password at the first "@": the rest would be taken for the host
        # (and printed as one in connection errors)
        if "@" in userinfo:
            raise TrackingError(f"malformed tracking URI {redact(uri)!r}: its password holds '@'; "
                                "percent-encode it as %40")
    else:
        raise TrackingError(f"unsupported tracking URI {redact(uri)!r} ({SUPPORTED})")


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

