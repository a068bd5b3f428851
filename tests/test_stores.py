"""TrackedCheckpoints against real stores: a local artifact root, a proxying server, auth."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

from tests.repos import NoDeleteRepository
from tests.servers import HOST, free_port, mlflow_server
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.store.errors import DeleteUnsupported, StoreError, StorePermissionError, StoreUnavailable
from tracker.store.redact import redact as scrub
from tracker.store.retry import RetryPolicy

FAST_RETRY = RetryPolicy(total_s=1.5, first_delay_s=0.1, max_delay_s=0.3)


@pytest.fixture
def no_mlflow_http_retries(monkeypatch):
    # MLflow's HTTP layer retries on its own for minutes; tests of our retry loop turn it off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _checkpoint(tmp_path, name="epoch_0003.pt", size=1234):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def _roundtrip(store: TrackedCheckpoints, tmp_path):
    """upload -> list -> download -> delete -> gone, keeping a second file untouched."""
    a, b = _checkpoint(tmp_path, "epoch_0001.pt", 1000), _checkpoint(tmp_path, "epoch_0002.pt", 77)
    assert store.list() == {}
    stored = store.upload(a)
    assert (stored.name, stored.size, stored.artifact_path) == (
        "epoch_0001.pt", 1000, "hype_checkpoints/epoch_0001.pt")  # fmt: skip
    store.upload(b)
    assert store.list() == {"epoch_0001.pt": 1000, "epoch_0002.pt": 77}
    got = store.download("epoch_0001.pt", tmp_path / "restore")
    assert got == tmp_path / "restore" / "epoch_0001.pt"
    assert got.read_bytes() == a.read_bytes()
    store.delete("epoch_0001.pt")
    assert store.list() == {"epoch_0002.pt": 77}
    store.delete("epoch_0001.pt")  # already gone: fine
    store.delete("never_was.pt")


def test_local_artifact_root(sqlite_tracking, tmp_path):
    client = MlflowClient(sqlite_tracking.tracking_uri)
    run = client.create_run(client.create_experiment("stores-local"))
    store = TrackedCheckpoints(run.info.run_id, client=client)
    _roundtrip(store, tmp_path)
    on_disk = sorted(p.name for p in sqlite_tracking.artifact_root.rglob("*.pt"))
    assert on_disk == ["epoch_0002.pt"]


def test_proxied_server(mlflow_server_proxied, tmp_path):
    client = MlflowClient(mlflow_server_proxied.url)
    run = client.create_run(client.create_experiment("stores-roundtrip"))
    run_id = run.info.run_id
    store = TrackedCheckpoints(run_id, client=client)
    assert store.uri.startswith("mlflow-artifacts:")
    _roundtrip(store, tmp_path)

    # What the server itself lists, over plain HTTP, and what its disk holds.
    listed = requests.get(
        f"{mlflow_server_proxied.url}/api/2.0/mlflow/artifacts/list",
        params={"run_id": run_id, "path": "hype_checkpoints"},
        timeout=10,
    ).json()
    assert [f["path"] for f in listed["files"]] == ["hype_checkpoints/epoch_0002.pt"]
    on_disk = sorted(p.name for p in mlflow_server_proxied.artifacts_dir.rglob(f"{run_id}/**/*.pt"))
    assert on_disk == ["epoch_0002.pt"]


def test_folder_and_name_are_validated(sqlite_tracking, tmp_path):
    client = MlflowClient(sqlite_tracking.tracking_uri)
    run_id = client.create_run("0").info.run_id
    with pytest.raises(ValueError, match="reserved.*autolog"):
        TrackedCheckpoints(run_id, folder="checkpoints", client=client)
    with pytest.raises(ValueError, match="relative path"):
        TrackedCheckpoints(run_id, folder="../elsewhere", client=client)
    store = TrackedCheckpoints(run_id, client=client)
    with pytest.raises(ValueError, match="plain file name"):
        store.delete("../mlflow.db")
    with pytest.raises(FileNotFoundError, match="not a file"):
        store.upload(tmp_path / "missing.pt")


def test_unknown_run_names_the_run(sqlite_tracking):
    client = MlflowClient(sqlite_tracking.tracking_uri)
    with pytest.raises(StoreError, match="look up run 0123456789abcdef"):
        TrackedCheckpoints("0123456789abcdef0123456789abcdef", client=client)


# --- repositories that cannot delete ---------------------------------------------------------


class _RaisesOnDelete(NoDeleteRepository):
    def delete_artifacts(self, artifact_path=None):
        raise NotImplementedError("no deletes here")


@pytest.mark.parametrize("scheme, cls", [("nodelete", NoDeleteRepository), ("raisedelete", _RaisesOnDelete)])
def test_repository_without_delete_raises(sqlite_tracking, tmp_path, scheme, cls):
    _artifact_repository_registry.register(scheme, cls)
    try:
        client = MlflowClient(sqlite_tracking.tracking_uri)
        exp = client.create_experiment(scheme, artifact_location=f"{scheme}:{tmp_path / 'store'}")
        store = TrackedCheckpoints(client.create_run(exp).info.run_id, client=client)
        store.upload(_checkpoint(tmp_path))
        with pytest.raises(DeleteUnsupported, match=f"scheme '{scheme}'"):
            store.delete("epoch_0003.pt")
        assert store.list() == {"epoch_0003.pt": 1234}  # left in place, and said so
    finally:
        _artifact_repository_registry._registry.pop(scheme, None)


# --- permissions --------------------------------------------------------------------------


def _login(monkeypatch, username, password):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_delete_without_manage_is_a_permission_error(basic_auth_server, tmp_path, monkeypatch):
    auth = basic_auth_server
    _login(monkeypatch, auth.admin_username, auth.admin_password)
    client = MlflowClient(auth.url)
    exp = client.create_experiment("stores-no-manage")
    run_id = client.create_run(exp).info.run_id
    TrackedCheckpoints(run_id, client=client).upload(_checkpoint(tmp_path))

    password = "carol-s3cret-Pa55"
    auth.create_user("carol", password)
    auth.grant("carol", exp, "EDIT")  # may log, may not delete
    _login(monkeypatch, "carol", password)
    store = TrackedCheckpoints(run_id, client=client)
    start = time.monotonic()
    with pytest.raises(StorePermissionError) as err:
        store.delete("epoch_0003.pt")
    assert time.monotonic() - start < 5  # not retried
    message = str(err.value)
    assert err.value.status == 403
    assert "MANAGE" in message and "epoch_0003.pt" in message and "\n" not in message
    assert password not in message and auth.admin_password not in message
    assert store.list() == {"epoch_0003.pt": 1234}


def test_wrong_password_is_a_permission_error(basic_auth_server, monkeypatch):
    _login(monkeypatch, "carol", "not-carols-password")
    with pytest.raises(StorePermissionError) as err:
        TrackedCheckpoints("0123456789abcdef0123456789abcdef", client=MlflowClient(basic_auth_server.url))
    assert "not-carols-password" not in str(err.value)


# --- transient failures ---------------------------------------------------------------------


class _FixedStatusServer:
    """A plain HTTP server on 127.0.0.1 answering every request with one status; counts them."""

    def __init__(self, status: int):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _store_behind(sqlite_tracking, url):
    client = MlflowClient(sqlite_tracking.tracking_uri)
    # HttpArtifactRepository needs the mlflow-artifacts endpoint in the URI to list.
    location = f"{url}/api/2.0/mlflow-artifacts/artifacts/behind"
    exp = client.create_experiment(f"behind-{url.rsplit(':', 1)[1]}", artifact_location=location)
    return TrackedCheckpoints(client.create_run(exp).info.run_id, client=client, retry=FAST_RETRY)


def test_5xx_is_retried_until_the_budget_runs_out(sqlite_tracking, no_mlflow_http_retries):
    with _FixedStatusServer(503) as server:
        store = _store_behind(sqlite_tracking, server.url)
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"list 'hype_checkpoints'.*attempts"):
            store.list()
        elapsed = time.monotonic() - start
    assert server.requests >= 3
    assert FAST_RETRY.total_s <= elapsed < FAST_RETRY.total_s + 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_not_retried(sqlite_tracking, no_mlflow_http_retries, status):
    with _FixedStatusServer(status) as server:
        store = _store_behind(sqlite_tracking, server.url)
        with pytest.raises(StorePermissionError) as err:
            store.list()
    assert server.requests == 1
    assert err.value.status == status


def test_unreachable_server_message_has_no_credentials(monkeypatch, no_mlflow_http_retries):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-s3cret-value")
    client = MlflowClient(f"http://hype:url-s3cret@{HOST}:{free_port()}")
    with pytest.raises(StoreUnavailable) as err:
        TrackedCheckpoints("0123456789abcdef0123456789abcdef", client=client, retry=FAST_RETRY)
    message = str(err.value)
    assert "s3cret" not in message and "hype:" not in message
    assert f"{HOST}:" in message and "attempts" in message


def test_waits_for_a_server_that_comes_up(tmp_path, no_mlflow_http_retries):
    """Connection refused for a few seconds, then the server is there: the upload goes through."""
    backend = f"sqlite:///{tmp_path / 'late.db'}"
    embedded = MlflowClient(backend)
    exp = embedded.create_experiment("late", artifact_location="mlflow-artifacts:/late")
    run_id = embedded.create_run(exp).info.run_id
    port = free_port()
    stop = threading.Event()

    def serve_late():
        time.sleep(1.0)
        with mlflow_server(tmp_path / "srv", backend_uri=backend, port=port):
            stop.wait(60)

    server = threading.Thread(target=serve_late)
    server.start()
    try:
        start = time.monotonic()
        store = TrackedCheckpoints(run_id, client=MlflowClient(f"http://{HOST}:{port}"),
                                   retry=RetryPolicy(total_s=60, max_delay_s=0.5))  # fmt: skip
        assert time.monotonic() - start > 1.0
        assert store.upload(_checkpoint(tmp_path)).size == 1234
    finally:
        stop.set()
        server.join(30)


def test_scrub():
    assert scrub("http://u:p@h:1/x?X-Amz-Signature=abc&y=1") == "http://***@h:1/x?X-Amz-Signature=***&y=1"
    assert scrub("Authorization: Basic dTpw\nnext") == "Authorization: Basic *** next"
