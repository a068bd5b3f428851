"""The test servers start, answer real MLflow calls, and leave no process behind.

Teardown is checked explicitly here for one `mlflow server` and for PostgreSQL; the shared
fixtures use the same context managers, whose stop step raises if any process of the group
survives.
"""

from __future__ import annotations

import os
import socket

import pytest
import requests
from mlflow import MlflowClient

from tests.servers import HOST, PG_BIN, free_port, mlflow_server, postgres_cluster


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


def test_mlflow_server_stops_its_whole_process_group(tmp_path):
    with mlflow_server(tmp_path / "srv") as srv:
        print(f"mlflow server (sqlite) started in {srv.startup_s:.1f} s")
        _exercise(srv.url, tmp_path, "probe")
        # Proxied: the bytes land in the server's artifacts dir, not beside the client.
        stored = list(srv.artifacts_dir.rglob("hello.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "hello"
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.pgid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.url}/health", timeout=2)
    assert "Uvicorn running on" in srv.log_path.read_text()


@pytest.mark.skipif(not (PG_BIN / "pg_ctl").exists(), reason=f"no PostgreSQL 15 at {PG_BIN}")
def test_postgres_cluster_starts_and_stops(tmp_path):
    import psycopg2

    with postgres_cluster(tmp_path) as uri:
        assert uri.startswith("postgresql+psycopg2://nobody@127.0.0.1:")
        port = int(uri.rsplit(":", 1)[1].split("/")[0])
        conn = psycopg2.connect(host=HOST, port=port, user="nobody", dbname="mlflow")
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_setting('listen_addresses')")
            assert cur.fetchone() == ("mlflow", HOST)
        conn.close()
    with pytest.raises(OSError), socket.create_connection((HOST, port), timeout=2):
        pass
    assert (tmp_path / "postgres.log").exists()


def test_mlflow_server_proxied(mlflow_server_proxied, tmp_path):
    print(f"mlflow_server_proxied started in {mlflow_server_proxied.startup_s:.1f} s")
    _exercise(mlflow_server_proxied.url, tmp_path, "servers-probe")


def test_pg_mlflow_server(pg_mlflow_server, tmp_path):
    print(f"pg_mlflow_server started in {pg_mlflow_server.startup_s:.1f} s")
    assert pg_mlflow_server.backend_uri.startswith("postgresql+psycopg2://")
    _exercise(pg_mlflow_server.url, tmp_path, "servers-probe-pg")


def test_basic_auth_server(basic_auth_server, tmp_path, monkeypatch):
    auth = basic_auth_server
    print(f"basic_auth_server started in {auth.server.startup_s:.1f} s")
    anonymous = requests.get(f"{auth.url}/api/2.0/mlflow/experiments/search",
                             params={"max_results": 1}, timeout=10)  # fmt: skip
    assert anonymous.status_code == 401
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth.admin_password)
    _exercise(auth.url, tmp_path, "servers-probe-auth")

    auth.create_user("bob", "bob-password-123")
    exp_id = MlflowClient(auth.url).create_experiment("bobs-readonly")
    auth.grant("bob", exp_id, "READ")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "bob-password-123")
    with pytest.raises(Exception, match="PERMISSION_DENIED|403"):
        MlflowClient(auth.url).create_run(exp_id)
