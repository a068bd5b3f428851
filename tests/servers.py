"""Real servers for tests: an `mlflow server` and a throwaway PostgreSQL 15 cluster.

Every server runs in its own process group, started with start_new_session=True, and is
stopped by signalling that group by the id recorded at start. Nothing is ever killed by name:
other engineers run their own servers on the same machine at the same time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# PostgreSQL refuses to run as root; when the tests run as root the cluster runs as this user.
PG_OS_USER = "nobody"

# A fresh SQLite store is migrated by the `mlflow server` process before uvicorn starts;
# with imports that takes about 4 s, so a minute only runs out when something is wrong.
START_TIMEOUT_S = 60.0
# `mlflow models serve` (through `cli.py serve`) imports the model's code before it answers.
COMMAND_START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
# free_port() can race with other processes grabbing the same port before we bind it.
BIND_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group exists but belongs to someone else; for our purposes it is still there.
        return True
    return True


def stop_process_group(proc: subprocess.Popen, pgid: int, timeout: float = STOP_TIMEOUT_S):
    """SIGTERM the whole group, then SIGKILL whatever is left; reap our direct child.

    The group matters: `mlflow server` forks uvicorn (and, unless disabled, huey consumers),
    and killing only the leader would orphan them with the port still bound.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # The leader is reaped; its forks are reparented to init and may need a moment to exit.
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_alive(pgid):
            break
    if proc.poll() is None:
        proc.wait(timeout=timeout)
    if group_alive(pgid):
        raise RuntimeError(f"process group {pgid} ({proc.args[0]}) survived SIGTERM and SIGKILL")


@contextmanager
def started(cmd: list[str], env: dict, log_path: Path, ready_url: str,
            timeout: float = COMMAND_START_TIMEOUT_S) -> Iterator[tuple[subprocess.Popen, int]]:
    """Run a command that serves HTTP (`cli.py ui`, `cli.py serve`, `mlflow models serve`) in a
    process group of its own, with its output in log_path and log_path's folder as its working
    directory; yield (process, group id) once ready_url answers 200; stop the group on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent,
                                start_new_session=True)
    pgid = proc.pid  # start_new_session: the child leads its own group
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[1]} exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if requests.get(ready_url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{ready_url} did not answer:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield proc, pgid
    finally:
        stop_process_group(proc, pgid)


@dataclass(frozen=True)
class MlflowServer:
    url: str  # http://127.0.0.1:<port>, the tracking URI for clients
    artifacts_dir: Path  # where the server stores proxied (mlflow-artifacts:) artifacts
    log_path: Path  # server stdout+stderr
    backend_uri: str
    pgid: int  # the process group to signal; recorded at start
    startup_s: float  # seconds from spawn to /health answering
    env: dict = field(default_factory=dict, repr=False)  # extra env the server got


def _server_env(extra: dict | None) -> dict:
    env = dict(os.environ)
    # A client-side tracking URI or credentials from the caller's shell mean nothing to a server.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    # The job runner spawns seven huey consumer processes and adds about a second to startup;
    # no test here runs server-side jobs.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(extra or {})
    return env


def _wait_until_serving(proc, port: int, log_path: Path, timeout: float) -> None:
    """Wait for /health on our port AND for our own uvicorn to report it bound that port.

    /health alone is not enough: if another process took the port first, it may answer while
    our server died on "address already in use".
    """
    url = f"http://{HOST}:{port}/health"
    bound_line = f"Uvicorn running on http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(
                f"mlflow server exited with code {proc.returncode} before serving on port "
                f"{port}; log {log_path}:\n{log_tail(log_path)}"
            )
        if bound_line in log_path.read_text(errors="replace"):
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
        time.sleep(0.1)
    raise ServerStartError(
        f"mlflow server did not answer {url} within {timeout:.0f} s; log {log_path}:\n"
        f"{log_tail(log_path)}"
    )


@contextmanager
def mlflow_server(
    tmp_path: Path,
    backend_uri: str | None = None,
    app_name: str | None = None,
    env: dict | None = None,
    timeout: float = START_TIMEOUT_S,
    port: int | None = None,
) -> Iterator[MlflowServer]:
    """Run `mlflow server` with proxied artifacts under tmp_path; stop its process group on exit.

    backend_uri defaults to a SQLite file under tmp_path. One uvicorn worker (`--workers 1`,
    uvicorn being 3.17's default server) keeps startup and memory low. A given port is used as
    is (no retry on a lost race); by default a free one is picked.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    backend_uri = backend_uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts_dir = tmp_path / "artifacts"
    server_env = _server_env(env)
    fixed_port = port
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = fixed_port or free_port()
        log_path = tmp_path / f"mlflow-server-{port}.log"
        cmd = [
            str(VENV_BIN / "mlflow"), "server",
            "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(artifacts_dir),
            "--host", HOST,
            "--port", str(port),
            "--workers", "1",
        ]  # fmt: skip
        if app_name:
            cmd += ["--app-name", app_name]
        started = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env,
                cwd=tmp_path, start_new_session=True,
            )  # fmt: skip
        pgid = proc.pid  # start_new_session: the child leads its own group
        try:
            _wait_until_serving(proc, port, log_path, timeout)
        except ServerStartError:
            stop_process_group(proc, pgid)
            lost_race = "address already in use" in log_path.read_text(errors="replace").lower()
            if lost_race and not fixed_port and attempt < BIND_ATTEMPTS:
                continue
            raise
        except BaseException:
            stop_process_group(proc, pgid)
            raise
        break
    server = MlflowServer(
        url=f"http://{HOST}:{port}",
        artifacts_dir=artifacts_dir,
        log_path=log_path,
        backend_uri=backend_uri,
        pgid=pgid,
        startup_s=time.monotonic() - started,
        env=dict(env or {}),
    )
    try:
        yield server
    finally:
        stop_process_group(proc, pgid)


# --- basic-auth server -------------------------------------------------------------------


@dataclass(frozen=True)
class AuthServer:
    server: MlflowServer
    admin_username: str
    admin_password: str

    @property
    def url(self) -> str:
        return self.server.url

    def create_user(self, username: str, password: str) -> None:
        """Create a non-admin user (as the admin). Passwords need at least 12 characters."""
        resp = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=(self.admin_username, self.admin_password),
            timeout=10,
        )
        resp.raise_for_status()

    def grant(self, username: str, experiment_id: str, permission: str) -> None:
        """Give username READ / USE / EDIT / MANAGE on one experiment (as the admin).

        EDIT is the interesting one for checkpoints: it allows uploading artifacts but not
        deleting them, which the artifact proxy gates on MANAGE.
        """
        resp = requests.post(
            f"{self.url}/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": permission,
            },
            auth=(self.admin_username, self.admin_password),
            timeout=10,
        )
        resp.raise_for_status()


@contextmanager
def basic_auth_mlflow_server(tmp_path: Path) -> Iterator[AuthServer]:
    """`mlflow server --app-name basic-auth` with its own auth db and a random admin password.

    MLflow 3.17 reads the auth settings from the ini named by MLFLOW_AUTH_CONFIG_PATH (the
    shipped basic_auth.ini points its user db at ./basic_auth.db). It ships no admin password:
    the first start creates `admin_username` with MLFLOW_AUTH_ADMIN_PASSWORD, and refuses to
    start without one. The auth app also needs MLFLOW_FLASK_SERVER_SECRET_KEY for CSRF.
    Users without a grant get `default_permission` (READ) on experiments they did not create.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    password = "admin-" + secrets.token_urlsafe(16)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    with mlflow_server(tmp_path, app_name="basic-auth", env=env) as server:
        yield AuthServer(server=server, admin_username="admin", admin_password=password)


# --- PostgreSQL ------------------------------------------------------------------------


def _as_pg_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def _pg_os_user() -> str:
    if os.geteuid() == 0:
        return PG_OS_USER
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _run(cmd: list[str], what: str, timeout: float = 60) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise ServerStartError(
            f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
        )


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class _PgCluster:
    base: Path
    port: int = 0
    pid: int | None = None  # the postmaster, read from postmaster.pid once it is up

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def pg_ctl(self, *args: str) -> list[str]:
        return _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args])

    def start(self, port: int) -> None:
        self.port = port
        opts = " ".join([
            f"-p {port}",
            f"-c listen_addresses={HOST}",
            f"-c unix_socket_directories={self.base / 'sock'}",
            # A throwaway cluster: durability only costs time here.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        ])  # fmt: skip
        _run(self.pg_ctl("-l", str(self.log), "-o", opts, "-w", "-t", "30", "start"),
             "pg_ctl start")  # fmt: skip
        self.pid = _postmaster_pid(self.data)

    def stop(self) -> None:
        subprocess.run(self.pg_ctl("-m", "fast", "-w", "-t", "10", "stop"),
                       capture_output=True, timeout=30)  # fmt: skip
        # Whatever survived "fast" shutdown: only the postmaster we started, by its pid.
        if self.pid and _pid_alive(self.pid):
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 5
                while _pid_alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)


@contextmanager
def postgres_cluster(tmp_path: Path) -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 with a database `mlflow`.

    Yields `postgresql+psycopg2://<user>@127.0.0.1:<port>/mlflow`. The driver is named on
    purpose: with a bare `postgresql://` SQLAlchemy 2.1 picks psycopg (3), which is not
    installed; psycopg2-binary is.

    The cluster lives in its own mkdtemp under /tmp, not under tmp_path: pytest's base temp
    dir is mode 0700 and owned by root, so `nobody` could not reach a data dir inside it.
    The server log is copied to tmp_path/postgres.log on exit.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="hype-pg-"))
    cluster = _PgCluster(base)
    try:
        (base / "sock").mkdir()
        if os.geteuid() == 0:
            shutil.chown(base, user=PG_OS_USER)
            shutil.chown(base / "sock", user=PG_OS_USER)
        user = _pg_os_user()
        _run(_as_pg_user([
            str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", user,
            "--auth-host=trust", "--auth-local=trust", "--no-sync", "-E", "UTF8",
        ]), "initdb")  # fmt: skip
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                cluster.start(free_port())
                break
            except ServerStartError:
                lost_race = "already in use" in log_tail(cluster.log, 20)
                if not lost_race or attempt == BIND_ATTEMPTS:
                    raise ServerStartError(
                        f"PostgreSQL did not start; log {cluster.log}:\n{log_tail(cluster.log)}"
                    ) from None
        _create_database(user, cluster.port, "mlflow")
        yield f"postgresql+psycopg2://{user}@{HOST}:{cluster.port}/mlflow"
    finally:
        cluster.stop()
        if cluster.log.exists():
            shutil.copy(cluster.log, tmp_path / "postgres.log")
        shutil.rmtree(base, ignore_errors=True)


def _create_database(user: str, port: int, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=port, user=user, dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
