"""open_tracking_store: six processes opening one fresh SQLite db at the same instant."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

from tests.servers import HOST, free_port
from tracker.store.errors import TrackingUnavailable
from tracker.store.open import open_tracking_store
from tracker.store.retry import RetryPolicy

WRITERS = 6


def _writer(uri: str, locked: bool, barrier, i: int, results) -> None:
    """Open the store (with or without the lock), then create an experiment and log a param."""
    try:
        from mlflow import MlflowClient

        barrier.wait(timeout=60)  # everyone imported; go together
        client = open_tracking_store(uri) if locked else MlflowClient(uri)
        run = client.create_run(client.create_experiment(f"writer-{i}"))
        client.log_param(run.info.run_id, "writer", str(i))
        results.put((i, "ok"))
    except BaseException as exc:  # report everything: the parent asserts on it
        results.put((i, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))


def _race(uri: str, locked: bool) -> dict[int, str]:
    # forkserver with mlflow preloaded: each writer starts in milliseconds instead of paying
    # a 1.5 s import, so they really do arrive together, and from a process without threads.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([
        "mlflow", "mlflow.store.tracking.sqlalchemy_store", "tracker.store.open"
    ])
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(uri, locked, barrier, i, results))
        for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return outcome


def _alembic_version(db) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_six_processes_open_a_fresh_db_with_the_lock(tmp_path, _migrated_sqlite_db):
    db = tmp_path / "fresh.db"
    outcome = _race(f"sqlite:///{db}", locked=True)
    assert outcome == dict.fromkeys(range(WRITERS), "ok")

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = {n for (n,) in conn.execute("SELECT name FROM experiments")}
        params = sorted(v for (v,) in conn.execute("SELECT value FROM params WHERE key='writer'"))
        alembic_rows = conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
    assert names == {"Default"} | {f"writer-{i}" for i in range(WRITERS)}
    assert params == [str(i) for i in range(WRITERS)]
    # Fully migrated, once: the same head revision as a db migrated by a single process.
    assert alembic_rows == 1
    assert _alembic_version(db) == _alembic_version(_migrated_sqlite_db)


@pytest.mark.slow
def test_without_the_lock_the_same_race_fails(tmp_path):
    """MLflow alone: concurrent first opens collide in the migrations (reproduced every time
    here, on 2 cores: "duplicate column name: step", alembic_version mismatches)."""
    for trial in range(3):
        outcome = _race(f"sqlite:///{tmp_path / f'unlocked-{trial}.db'}", locked=False)
        failures = {i: r for i, r in outcome.items() if r != "ok"}
        if failures:
            break
    assert failures, "six unlocked first opens all succeeded in 3 trials"


def test_second_open_in_a_process_is_cheap(tmp_path):
    uri = f"sqlite:///{tmp_path / 'again.db'}"
    open_tracking_store(uri)
    start = time.monotonic()
    open_tracking_store(uri).create_experiment("again")
    assert time.monotonic() - start < 1.0


def test_sqlite_parent_dir_is_created_like_mlflow_does(tmp_path):
    db = tmp_path / "new" / "dir" / "mlflow.db"
    open_tracking_store(f"sqlite:///{db}")
    assert db.exists()


def test_unreachable_server_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-s3cret-value")
    uri = f"http://someone:url-s3cret@{HOST}:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        open_tracking_store(uri, probe=RetryPolicy(total_s=1.0, first_delay_s=0.2))
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message and "s3cret" not in message and "someone" not in message
    assert f"{HOST}:" in message and "attempts" in message


def test_server_answers(mlflow_server_proxied):
    client = open_tracking_store(mlflow_server_proxied.url)
    assert client.get_experiment("0").name == "Default"


def test_not_an_mlflow_server(mlflow_server_proxied):
    with pytest.raises(TrackingUnavailable, match="404.*not an MLflow tracking server"):
        open_tracking_store(f"{mlflow_server_proxied.url}/wrong-prefix")


def test_unreachable_database(monkeypatch):
    uri = f"postgresql+psycopg2://nobody:db-s3cret@{HOST}:{free_port()}/mlflow"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="connect to") as err:
        open_tracking_store(uri, probe=RetryPolicy(total_s=1.0, first_delay_s=0.2))
    assert time.monotonic() - start < 5  # not MLflow's 100 s of engine retries
    assert "db-s3cret" not in str(err.value)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("postgresql://nobody@127.0.0.1:1/mlflow", "no database driver.*postgresql\\+psycopg2"),
        ("nosuchscheme://host/x", "cannot be opened"),
        ("http://", "reach tracking server"),
    ],
)
def test_malformed_or_unsupported_uri(uri, expected):
    with pytest.raises(TrackingUnavailable, match=expected):
        open_tracking_store(uri, probe=RetryPolicy(total_s=0.5, first_delay_s=0.1))


def test_postgres_store_opens(postgres_uri):
    client = open_tracking_store(postgres_uri)
    assert client.create_experiment("on-postgres")
