"""The test servers start, answer real MLflow calls, and leave no process behind."""

from __future__ import annotations

import os
import socket

import pytest
import requests
from mlflow import MlflowClient

from tests.servers import (
    HOST,
    PG_BIN,
    basic_auth_mlflow_server,
    free_port,
    mlflow_server,
    postgres_cluster,
)


def _assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _exercise(url: str, tmp_path, name: str) -> None:
    """Create an experiment, log a metric, and log + list an artifact through the proxy."""
    client = MlflowClient(url)
    exp_id = client.create_experiment(name)
    run = client.create_run(exp_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    client.log_metric(run.info.run_id, "loss", 0.5, step=3)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
    f = tmp_path / "hello.txt"
    f.write_text("hello")
    client.log_artifact(run.info.run_id, str(f), artifact_path="probe")
    listed = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "probe")}
    assert listed == {"probe/hello.txt": 5}


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind((HOST, port))


def test_mlflow_server_sqlite_proxied(tmp_path):
    with mlflow_server(tmp_path / "srv") as srv:
        print(f"mlflow server (sqlite) started in {srv.startup_s:.1f} s")
        _exercise(srv.url, tmp_path, "probe")
        # Proxied: the bytes land in the server's artifacts dir, not beside the client.
        stored = list(srv.artifacts_dir.rglob("hello.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "hello"
        assert srv.log_path.exists()
    _assert_group_gone(srv.pgid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.url}/health", timeout=2)


@pytest.mark.skipif(not (PG_BIN / "pg_ctl").exists(), reason=f"no PostgreSQL 15 at {PG_BIN}")
def test_postgres_backed_server(tmp_path):
    with postgres_cluster(tmp_path / "pg") as uri:
        assert uri.startswith("postgresql+psycopg2://nobody@127.0.0.1:")
        port = int(uri.rsplit(":", 1)[1].split("/")[0])
        with mlflow_server(tmp_path / "srv", backend_uri=uri) as srv:
            print(f"mlflow server (postgres) started in {srv.startup_s:.1f} s")
            _exercise(srv.url, tmp_path, "probe-pg")
        _assert_group_gone(srv.pgid)
    with pytest.raises(OSError), socket.create_connection((HOST, port), timeout=2):
        pass
    assert (tmp_path / "pg" / "postgres.log").exists()


def test_basic_auth_server(tmp_path, monkeypatch):
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs Flask-WTF (mlflow[auth])")
    with basic_auth_mlflow_server(tmp_path / "srv") as auth:
        print(f"mlflow server (basic-auth) started in {auth.server.startup_s:.1f} s")
        anonymous = requests.get(f"{auth.url}/api/2.0/mlflow/experiments/search",
                                 params={"max_results": 1}, timeout=10)  # fmt: skip
        assert anonymous.status_code == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth.admin_username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth.admin_password)
        _exercise(auth.url, tmp_path, "probe-auth")

        auth.create_user("bob", "bob-password-123")
        exp_id = MlflowClient(auth.url).create_experiment("bobs-readonly")
        auth.grant("bob", exp_id, "READ")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "bob-password-123")
        with pytest.raises(Exception, match="PERMISSION_DENIED|403"):
            MlflowClient(auth.url).create_run(exp_id)
    _assert_group_gone(auth.server.pgid)
