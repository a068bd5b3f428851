"""Shared fixtures: real tracking stores and real servers, all under pytest's tmp dirs.

Server fixtures are session-scoped because each `mlflow server` start costs about 4 s (5 s
for basic auth); tests that share one must use their own experiment names and users.
Every server is stopped by killing its process group, and stopping fails loudly if any
process of the group survives.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import NamedTuple

import pytest

from commands.train import STORE_EVERY_ENV
from tests.servers import (
    PG_BIN,
    basic_auth_mlflow_server,
    mlflow_server,
    postgres_cluster,
)

# The retention, lifecycle and resume tests count on every epoch's checkpoint being stored. With
# MLflow's store slower than their tiny epochs, the default would replace most waiting
# checkpoints by newer ones (tracker.policy.supersede); tests of that default use `superseding`.
# Set here, at import, so that every `train` these tests start (in-process or a child) sees it;
# tests that call run_training directly say TrackerConfig(store_every=True).
os.environ[STORE_EVERY_ENV] = "1"


@pytest.fixture
def superseding(monkeypatch):
    """The default: at the bound, a waiting checkpoint only newest N keeps is replaced."""
    monkeypatch.delenv(STORE_EVERY_ENV)


class SqliteTracking(NamedTuple):
    tracking_uri: str  # sqlite:////abs/path/mlflow.db
    artifact_root: Path  # where runs of this store keep their artifacts


@pytest.fixture(scope="session")
def _migrated_sqlite_db(tmp_path_factory) -> Path:
    """One fully migrated, empty MLflow SQLite db per session, copied by sqlite_tracking.

    Migrating a fresh db takes about 0.8 s; copying the file takes a millisecond.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("sqlite-template") / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "mlruns"))
    store.engine.dispose()  # no open connection while the file is copied
    return path


def _fresh_sqlite_store(template: Path, dst: Path, artifact_root: Path) -> str:
    shutil.copy(template, dst)
    # The Default experiment (id 0) was created with the template's artifact location.
    with sqlite3.connect(dst) as conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(artifact_root / "0"),),
        )
    return f"sqlite:///{dst}"


@pytest.fixture
def sqlite_tracking(tmp_path, monkeypatch, _migrated_sqlite_db) -> SqliteTracking:
    """An embedded SQLite tracking store in tmp_path, with artifacts under tmp_path/mlruns.

    The test runs with tmp_path as its working directory: MLflow puts the artifacts of
    experiments created without an artifact_location in ./mlruns, and that must not be the
    repository's.
    """
    artifact_root = tmp_path / "mlruns"
    uri = _fresh_sqlite_store(_migrated_sqlite_db, tmp_path / "mlflow.db", artifact_root)
    monkeypatch.chdir(tmp_path)
    return SqliteTracking(uri, artifact_root)


@pytest.fixture(scope="session")
def mlflow_server_proxied(tmp_path_factory, _migrated_sqlite_db):
    """`mlflow server` on a SQLite store, artifacts proxied (mlflow-artifacts:) to a tmp dir.

    Yields tests.servers.MlflowServer (.url, .artifacts_dir, .log_path, .pgid).
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    uri = _fresh_sqlite_store(_migrated_sqlite_db, root / "mlflow.db", root / "artifacts")
    with mlflow_server(root, backend_uri=uri) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory) -> str:
    """A throwaway PostgreSQL 15 database `mlflow` (postgresql+psycopg2://...)."""
    if not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN}/pg_ctl missing)")
    with postgres_cluster(tmp_path_factory.mktemp("postgres")) as uri:
        yield uri


@pytest.fixture(scope="session")
def pg_mlflow_server(tmp_path_factory, postgres_uri):
    """`mlflow server` backed by the session's PostgreSQL database, artifacts proxied."""
    with mlflow_server(tmp_path_factory.mktemp("pg-mlflow-server"), backend_uri=postgres_uri) as s:
        yield s


@pytest.fixture(scope="session")
def basic_auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth`; yields tests.servers.AuthServer.

    .admin_username/.admin_password are the admin's; .create_user(name, password) and
    .grant(name, experiment_id, "EDIT") make a user who may log but not delete artifacts.
    Clients authenticate with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    """
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs Flask-WTF (mlflow[auth])")
    with basic_auth_mlflow_server(tmp_path_factory.mktemp("auth-server")) as server:
        yield server


# One unit of work per test file for pytest-xdist, the longest files first: tests/xdist_units.py.
from tests.xdist_units import pytest_collection_modifyitems, pytest_xdist_make_scheduler  # noqa: E402, F401
