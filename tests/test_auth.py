"""A tracking server with MLflow's basic-auth app (`--app-name basic-auth`).

Users: an editor with EDIT only on one experiment, who passes credentials the documented way
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), and a manager with MANAGE on another, who
puts them in the tracking URI (http://user:password@host, which requests honours). EDIT may log
artifacts but not delete them, so the editor's retention must fail clearly and keep every
checkpoint on both sides. Passwords must never show up in what hype prints or records.

The server checks the password hash on every request. MLflow hashes with werkzeug's default,
scrypt, which costs about 0.4-0.8 s per request on a busy 2-core machine: a two-epoch training
makes about 35 requests. The fixture measures that once, then stores cheap PBKDF2 hashes for
its own users (check_password_hash reads the method from the stored hash) so the tests stay short.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--dim", "2", "--epochs", "2", "--burnin", "1", "--eval-every", "1", "--negs", "4", "--lr", "1.0",
         "--keep-checkpoints", "1", "--no-keep-best", "--monitor", "loss", "--quiet", "--no-pyfunc"]
# basic auth wants passwords of at least 12 characters
PASSWORDS = {user: f"{user}-{secrets.token_urlsafe(12)}" for user in ("manager", "editor")}


def _admin(server, method: str, endpoint: str, **kw):
    resp = requests.request(method, f"{server.url}{endpoint}", timeout=30,
                            auth=(server.admin_username, server.admin_password), **kw)
    resp.raise_for_status()
    return resp.json()


def _seconds_per_request(server, user: str, n: int = 3) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        requests.get(f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     auth=(user, PASSWORDS[user]), timeout=30).raise_for_status()
    return (time.perf_counter() - t0) / n


def _cheap_hashes(server, passwords: dict) -> None:
    from werkzeug.security import generate_password_hash

    db = server.server.log_path.parent / "basic_auth.db"  # database_uri in the fixture's ini
    with sqlite3.connect(db) as conn:
        for user, password in passwords.items():
            hashed = generate_password_hash(password, method="pbkdf2:sha256:1000")
            conn.execute("UPDATE users SET password_hash = ? WHERE username = ?", (hashed, user))


def _env(user: str | None = None, password: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


def _cli_train(server, tmp: Path, experiment: str, env: dict, uri: str | None = None):
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", uri or server.url,
           "--dataset", str(tmp / "tree_closure.csv"), "--experiment", experiment,
           "--checkpoint-dir", str(tmp / experiment), *TRAIN]
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.fixture(scope="module")
def runs(basic_auth_server, tmp_path_factory):
    """Two finished trainings, run at the same time: {user: (run_id, local folder, output)}."""
    server = basic_auth_server
    tmp = tmp_path_factory.mktemp("auth")
    write_tree_closure(tmp / "tree_closure.csv", depth=2)
    # the admin keeps its password; only the hash the server checks gets cheaper
    _cheap_hashes(server, {server.admin_username: server.admin_password})
    grants = {"manager": ("auth-manage", "MANAGE"), "editor": ("auth-edit", "EDIT")}
    for user, (experiment, permission) in grants.items():
        server.create_user(user, PASSWORDS[user])
        exp_id = _admin(server, "POST", "/api/2.0/mlflow/experiments/create", json={"name": experiment})
        server.grant(user, exp_id["experiment_id"], permission)
    scrypt_s = _seconds_per_request(server, "editor")
    _cheap_hashes(server, PASSWORDS)
    print(f"basic auth: {scrypt_s * 1000:.0f} ms per request with MLflow's scrypt hashes, "
          f"{_seconds_per_request(server, 'editor') * 1000:.0f} ms with the tests' PBKDF2 ones")
    host = server.url.removeprefix("http://")
    procs = {
        "editor": _cli_train(server, tmp, "auth-edit", _env("editor", PASSWORDS["editor"])),
        "manager": _cli_train(server, tmp, "auth-manage", _env(),
                              uri=f"http://manager:{PASSWORDS['manager']}@{host}"),
    }
    out = {}
    for user, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{user}:\n{stdout}\n{stderr}"
        (folder,) = (tmp / grants[user][0]).iterdir()
        out[user] = (folder.name, folder, stdout + stderr)
    return out


def _get_run(server, run_id):
    return _admin(server, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id})["run"]


def _tracked(server, run_id, folder=layout.CHECKPOINT_FOLDER):
    files = _admin(server, "GET", "/api/2.0/mlflow/artifacts/list",
                   params={"run_id": run_id, "path": folder}).get("files", [])
    return sorted(f["path"].rsplit("/", 1)[-1] for f in files)


def _local(folder: Path):
    return sorted(p.name for p in folder.glob("tree_epoch*.pth"))


def test_manage_user_trains_and_retention_deletes(basic_auth_server, runs):
    run_id, folder, output = runs["manager"]
    assert "ERROR" not in output and "Deleted old checkpoint: tree_epoch0001.pth" in output
    assert _tracked(basic_auth_server, run_id) == _local(folder) == ["tree_epoch0002.pth"]
    assert _tracked(basic_auth_server, run_id, layout.FINAL_FOLDER) == ["tree.pth"]
    assert _get_run(basic_auth_server, run_id)["info"]["status"] == "FINISHED"


def test_credentials_from_the_environment_train_and_edit_only_keeps_every_checkpoint(
        basic_auth_server, runs):
    run_id, folder, output = runs["editor"]
    assert "ERROR: retention cannot delete tracked checkpoints" in output
    assert "needs MANAGE permission" in output and f"cleanup --run-id {run_id}" in output
    assert "Deleted old checkpoint" not in output
    everything = ["tree_epoch0001.pth", "tree_epoch0002.pth"]
    assert _local(folder) == everything  # the local copies are not deleted either
    assert _tracked(basic_auth_server, run_id) == everything
    assert (folder / "tree.pth").exists()
    run = _get_run(basic_auth_server, run_id)
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert "MANAGE" in tags[layout.TAG_RETENTION_ERROR]


def test_cleanup_without_manage_is_one_line_and_deletes_nothing(basic_auth_server, runs):
    run_id, folder, _ = runs["editor"]
    before = (_local(folder), _tracked(basic_auth_server, run_id))
    result = CliRunner().invoke(
        cli, ["cleanup", "--run-id", run_id, "--keep", "1", "--tracking-uri", basic_auth_server.url],
        env={"MLFLOW_TRACKING_USERNAME": "editor", "MLFLOW_TRACKING_PASSWORD": PASSWORDS["editor"]})
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: the tracking server refused to delete checkpoints of run {run_id}")
    assert "needs MANAGE permission" in line and "Nothing of it was deleted" in line
    assert PASSWORDS["editor"] not in result.output
    assert (_local(folder), _tracked(basic_auth_server, run_id)) == before


def test_a_wrong_password_is_one_line_without_the_password(basic_auth_server, tmp_path):
    wrong = "wrong-" + secrets.token_urlsafe(12)
    write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    result = CliRunner().invoke(
        cli, ["train", "--tracking-uri", basic_auth_server.url, "--dataset", tmp_path / "tree_closure.csv",
              "--checkpoint-dir", tmp_path / "ckpt", *TRAIN],
        env={"MLFLOW_TRACKING_USERNAME": "editor", "MLFLOW_TRACKING_PASSWORD": wrong})
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and "permission denied" in line and "401" in line
    assert wrong not in result.output
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_no_password_in_params_tags_output_files_or_server_log(basic_auth_server, runs):
    for user, (run_id, folder, output) in runs.items():
        password = PASSWORDS[user]
        run = _get_run(basic_auth_server, run_id)
        recorded = [(p["key"], p["value"]) for p in run["data"].get("params", [])]
        recorded += [(t["key"], t["value"]) for t in run["data"].get("tags", [])]
        assert len(recorded) > 20
        leaks = [kv for kv in recorded if password in kv[0] or password in kv[1]]
        assert leaks == [], user
        assert password not in output, user
        for p in folder.rglob("*"):  # the checkpoints and the final model
            if p.is_file():
                assert password.encode() not in p.read_bytes(), p
        assert password not in basic_auth_server.server.log_path.read_text(errors="replace")
    _, _, url_output = runs["manager"]
    assert "http://***@127.0.0.1" in url_output  # the URI is shown, without its credentials
    assert "View run" not in url_output  # MLflow's own links would carry them
