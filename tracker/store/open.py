"""Open a tracking store safely, and fail early with one clear line when it cannot be used.

MLflow creates (or migrates) a SQL store's schema the first time a process touches it, with
no lock. Two processes doing that to a fresh SQLite file at once collide: "duplicate column
name", "table _alembic_tmp_... already exists", alembic_version mismatches, and a database
left half-migrated. For `sqlite:` URIs we therefore hold a file lock (`<db>.lock`, beside
the db) around the first touch in each process; later calls reuse MLflow's cached store.

Other schemes need no lock here: a tracking server migrates its store once at startup. They
get a cheap reachability check instead, so that a typo or a server that is down is reported
before training starts rather than after the first epoch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import get_uri_scheme

from tracker.layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from tracker.store.errors import StoreError, StoreUnavailable, TrackingError, TrackingUnavailable
from tracker.store.redact import one_line as _one_line
from tracker.store.redact import redact
from tracker.store.retry import RetryPolicy, call_with_retry
from tracker.store.uri import SQL_SCHEMES, artifact_location_for, resolve_tracking_uri, sqlite_path

# A fresh SQLite store is fully migrated in about a second; a lock held for minutes means a
# process is stuck, and waiting on it silently would look like a hang.
DEFAULT_LOCK_TIMEOUT_S = 120.0
# How long a server or database may be unreachable before we give up (connection refused, 5xx).
DEFAULT_PROBE = RetryPolicy(total_s=20.0, first_delay_s=0.5, max_delay_s=4.0)
# A person waits for cleanup, export, evaluate and ui: fail within seconds, not minutes.
READ_PROBE = RetryPolicy(total_s=10.0, first_delay_s=0.5, max_delay_s=2.0)


def resolve_and_open(
    cli_value: str | None, *, create: bool = True, probe: RetryPolicy = DEFAULT_PROBE
) -> tuple[str, MlflowClient]:
    """The tracking URI a command was given (resolved and checked, as `train` does) and a
    client whose store answers; TrackingError or TrackingUnavailable, one line, otherwise.

    Every command goes through here, so that one URI gets one verdict everywhere. With
    create=False (commands that only read or clean) a SQLite file that does not exist is an
    error, not a new empty store.
    """
    uri = resolve_tracking_uri(cli_value)
    return uri, open_tracking_store(uri, create=create, probe=probe)


def open_tracking_store(
    tracking_uri: str | None = None,
    *,
    create: bool = True,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    probe: RetryPolicy = DEFAULT_PROBE,
) -> MlflowClient:
    """A client for tracking_uri (default: MLflow's current one) whose store is ready to use."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    shown = redact(uri)
    try:
        scheme = get_uri_scheme(uri)
    except Exception as exc:
        raise TrackingUnavailable(f"tracking URI {shown!r} is malformed: {redact(exc)}") from None
    if scheme == "sqlite":
        return _open_sqlite(uri, lock_timeout_s, create=create)
    if scheme in ("http", "https"):
        _probe_http(uri, probe)
    elif scheme.split("+")[0] in SQL_SCHEMES:
        _probe_sql(uri, probe)
    return _ready_client(uri)


def _ready_client(uri: str) -> MlflowClient:
    """Build the client and touch the store once: that creates or migrates a SQL schema."""
    import logging

    # "Creating initial MLflow database tables..." on every new store: noise in a one-line error
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnavailable(
            f"tracking store {redact(uri)!r} cannot be opened: {_one_line(exc)}"
        ) from None
    return client



CREATING = ".creating-"  # <db dir>/.<db name>.creating-<pid>: a store being migrated


def _create_sqlite(db: Path) -> None:
    """Create a new store so that a kill at any moment leaves no store or a complete one:
    MLflow migrates a temporary file beside ``db``, which is then linked into place. The caller
    holds the store's lock, so leftovers of creators that were killed are ours to remove."""
    import sqlite3

    for stale in db.parent.glob(f".{db.name}{CREATING}*"):
        stale.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm", "-journal"):
        # a journal without its database (the db was moved aside): SQLite would replay it into
        # the new one and break it
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    tmp = db.parent / f".{db.name}{CREATING}{os.getpid()}"
    try:
        client = MlflowClient(f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # creates and migrates every table
        client._tracking_client.store.engine.dispose()  # no connection may outlive the rename
        with sqlite3.connect(tmp) as conn:  # fold a WAL journal back into the file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        os.link(tmp, db)  # atomic, and never over a store that appeared meanwhile
        fd = os.open(db.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except FileExistsError:
        pass  # created by a process that does not take our lock (mlflow ui): use that one
    except Exception as exc:
        raise TrackingUnavailable(f"cannot create the tracking store {db}: {_one_line(exc)}") from None
    finally:
        for leftover in db.parent.glob(f"{tmp.name}*"):  # the file, and any -wal/-shm beside it
            leftover.unlink(missing_ok=True)


def _open_existing(uri: str, db: Path) -> MlflowClient:
    """Open a store that exists; one made half by an older hype (killed while MLflow created
    its tables in place) is named as such, with how to recover."""
    try:
        return _ready_client(uri)
    except TrackingUnavailable as exc:
        runs = _count_runs(db)
        if runs == 0:
            raise TrackingUnavailable(
                f"{db} is a half-created tracking store (a first run was interrupted while MLflow "
                f"created its tables; it holds no runs): move it aside (mv {db} {db}.broken) and "
                "run again") from None
        raise exc from None


def _count_runs(db: Path) -> int | None:
    """How many runs the SQLite file holds; 0 without a runs table; None when unreadable."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "runs" not in tables:
                return 0
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return None


def _open_sqlite(uri: str, lock_timeout_s: float, *, create: bool) -> MlflowClient:
    from filelock import FileLock, Timeout

    try:
        db = sqlite_path(uri)
    except TrackingError as e:
        raise TrackingUnavailable(str(e)) from None
    if db is None:
        return _ready_client(uri)
    if db.is_dir():
        # MLflow would retry "unable to open database file" for about 100 s, warning each time
        raise TrackingUnavailable(f"tracking URI {redact(uri)!r}: {db} is a directory; give a "
                                  f"database file path, e.g. sqlite:///{db / 'mlflow.db'}")
    if not create:
        if not db.is_file():
            raise TrackingUnavailable(f"no tracking database at {db} (from {redact(uri)}): train "
                                      "first (python cli.py train) or give --tracking-uri")
        return _open_existing(uri, db)  # exists: no creation to serialise, so no lock file
    lock_path = Path(f"{db}.lock")
    try:
        # MLflow creates missing parent directories of a SQLite db too; the lock needs one.
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(lock_path, timeout=lock_timeout_s):
            if not db.exists():
                _create_sqlite(db)
            return _open_existing(uri, db)
    except Timeout:
        raise TrackingUnavailable(
            f"waited {lock_timeout_s:g} s for {lock_path}: another process has been creating "
            f"the schema of {db} for that long; is it stuck?"
        ) from None
    except OSError as exc:
        raise TrackingUnavailable(
            f"cannot lock SQLite tracking store {db} (lock file {lock_path}): {_one_line(exc)}"
        ) from None


def _probe_http(uri: str, probe: RetryPolicy) -> None:
    """One authenticated GET that only an MLflow tracking server answers with 200."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.request_utils import augmented_raise_for_status
    from mlflow.utils.rest_utils import http_request

    endpoint = "/api/2.0/mlflow/experiments/search"

    def get():
        # max_retries=0: our own loop retries within `probe`; MLflow's would wait minutes.
        resp = http_request(
            get_default_host_creds(uri), endpoint, "GET", params={"max_results": 1},
            max_retries=0, backoff_factor=0, timeout=10,
        )  # fmt: skip
        if resp.status_code == 404:
            # A StoreError passes through the retry loop as is: no point retrying this.
            raise StoreError(
                f"{redact(uri)} answered 404 for {endpoint}: not an MLflow tracking server "
                "(or the URI is missing a path prefix)"
            )
        augmented_raise_for_status(resp)

    _probe(f"reach tracking server {redact(uri)}", get, probe)


def _probe_sql(uri: str, probe: RetryPolicy) -> None:
    """Connect once, briefly, before MLflow's own engine retries for about 100 s."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(uri)
        connect_args = {"connect_timeout": 10} if url.get_backend_name() != "mssql" else {}
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise TrackingUnavailable(
            f"no database driver for {redact(uri)!r}: {_one_line(exc)}{_driver_hint(url)}"
        ) from None
    except Exception as exc:
        raise TrackingUnavailable(
            f"tracking URI {redact(uri)!r} is malformed: {_one_line(exc)}"
        ) from None
    try:
        _probe(f"connect to {redact(uri)}", lambda: engine.connect().close(), probe)
    finally:
        engine.dispose()


def _driver_hint(url) -> str:
    """What to do when SQLAlchemy's default driver for the scheme is not installed."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return " (name the driver, e.g. postgresql+psycopg2://)"  # the one installed
    if backend == "mysql":
        return (" (hype installs no MySQL driver: pip install pymysql and use mysql+pymysql://, "
                "or use postgresql+psycopg2:// or sqlite:///PATH)")
    return ""


def _probe(what: str, fn, probe: RetryPolicy) -> None:
    try:
        call_with_retry(what, fn, probe)
    except StoreUnavailable as exc:
        # The retries' own message ends in urllib3's "Max retries exceeded ..." for a port
        # nobody listens on: say what a user can act on instead.
        tries = re.search(r"after (\d+ attempts)", str(exc))
        raise TrackingUnavailable(
            f"cannot {what}: no answer within {probe.total_s:g} s"
            f"{f' ({tries.group(1)})' if tries else ''}; is it running, and is the address right?"
        ) from None
    except StoreError as exc:
        raise TrackingUnavailable(str(exc)) from None


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
