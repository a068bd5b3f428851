"""Tracking URIs: the one redactor over every URI form, the checks every command shares, and a
password holding '@' and '/' that a real server accepts and nothing hype prints or records shows."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from cli import cli
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port
from tracker.checkpoints.manifest import MANIFEST_NAME
from tracker.store.errors import TrackingError, TrackingUnavailable
from tracker.store.open import open_tracking_store, resolve_and_open
from tracker.store.redact import one_line, redact, userinfo_of
from tracker.store.retry import RetryPolicy
from tracker.store.uri import check_uri

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(total_s=0.3, first_delay_s=0.1, max_delay_s=0.1)

# --- redact: (text, what it must become) --------------------------------------------------------

REDACTED = [
    ("http://u:p@h:1/x", "http://***@h:1/x"),
    ("https://alice:s3cr3t@mlflow.example.com/", "https://***@mlflow.example.com/"),
    ("http://user@h", "http://***@h"),  # a user name alone is still an account to hide
    ("http://u:p@ss@127.0.0.1:5000", "http://***@127.0.0.1:5000"),  # '@' in the password
    ("http://u:p@ss@w@h/api?x=1", "http://***@h/api?x=1"),  # several
    ("http://user:se/cret@127.0.0.1:5000", "http://***@127.0.0.1:5000"),  # '/' in the password
    ("postgresql://user:pa/ss@host/db", "postgresql://***@host/db"),
    ("postgresql+psycopg2://u:a:b:c@h:5432/db", "postgresql+psycopg2://***@h:5432/db"),  # ':' too
    ("http://u:p%40s%2Fs%3A@h", "http://***@h"),  # percent-encoded
    ("postgresql://user:***@host/db", "postgresql://***@host/db"),  # SQLAlchemy's own masking
    ("mysql+pymysql://root:x@db:3306/m?charset=utf8", "mysql+pymysql://***@db:3306/m?charset=utf8"),
    # embedded in longer text, quoted as repr() quotes, and next to another URI
    ("cannot open 'http://u:p@ss@h:1': refused", "cannot open 'http://***@h:1': refused"),
    ('(url "postgresql://u:pa/ss@h/db")', '(url "postgresql://***@h/db")'),
    ("http://a:b@h1,http://c:d@h2", "http://***@h1,http://***@h2"),
    ("from http://u:p@h1 to http://h2/x", "from http://***@h1 to http://h2/x"),
    # key=value forms: libpq DSNs, query strings, environment dumps, JSON bodies
    ("host=h port=5432 password=s3cret user=u", "host=h port=5432 password=*** user=u"),
    ("dbname=m password='s3 cret' host=h", "dbname=m password='***' host=h"),
    ("http://h/x?password=p@ss&y=1", "http://h/x?password=***&y=1"),
    ("MLFLOW_TRACKING_PASSWORD=abc123", "MLFLOW_TRACKING_PASSWORD=***"),
    ('{"username": "u", "password": "s3 cret"}', '{"username": "u", "password": "***"}'),
    ("http://u:p@h:1/x?X-Amz-Signature=abc&y=1", "http://***@h:1/x?X-Amz-Signature=***&y=1"),
    ("Authorization: Basic dTpw\nnext", "Authorization: Basic *** next"),
    # left alone: not credentials
    ("mail bob@example.com about it", "mail bob@example.com about it"),
    ("sqlite:////data/runs@2024/mlflow.db", "sqlite:////data/runs@2024/mlflow.db"),  # a path
    ("file:///home/a@b/x", "file:///home/a@b/x"),
    ("http://127.0.0.1:5000/api/2.0/mlflow/runs/get", "http://127.0.0.1:5000/api/2.0/mlflow/runs/get"),
    ("no password: set MLFLOW_TRACKING_PASSWORD", "no password: set MLFLOW_TRACKING_PASSWORD"),
    ("FATAL: password authentication failed for user \"u\"",
     "FATAL: password authentication failed for user \"u\""),
]


def test_redact():
    wrong = [(text, redact(text), expected) for text, expected in REDACTED if redact(text) != expected]
    assert wrong == []


def test_redact_masks_secrets_from_the_environment_and_one_line_redacts_too(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-s3cret")
    assert redact("sent env-s3cret to h") == "sent *** to h"
    line = one_line(ValueError("bad\nhttp://u:pa/ss@h/x\npassword=zz"))
    assert line == "ValueError: bad http://***@h/x password=***"


def test_userinfo_of():
    assert [userinfo_of(uri) for uri in ("http://u:p@ss@h:1", "postgresql://u:pa/ss@h/db", "http://h:1/x",
                                          "sqlite:////a@b/m.db", "databricks")] == [
        "u:p@ss", "u:pa/ss", None, None, None]


# --- check_uri: what every command refuses before touching anything ------------------------------

REFUSED = [  # (URI, what the message says, and something else it says)
    ("file:///tmp/runs", "names MLflow's file store", "sqlite:////tmp/mlflow.db"),
    ("file:mlruns", "names MLflow's file store", "sqlite:///mlflow.db"),
    ("/tmp/runs", "names MLflow's file store", "sqlite:////tmp/mlflow.db"),
    ("./mlruns", "names MLflow's file store", "sqlite:///./mlflow.db"),
    ("runs.db", "names MLflow's file store", "sqlite:///runs.db"),
    ("http://hype:pa55/w0rd@127.0.0.1:5000", "percent-encode them (%2F", "'http://***@127.0.0.1:5000'"),
    ("http://hype:pa55?w0rd@127.0.0.1:5000", "percent-encode them", "'http://***@127.0.0.1:5000'"),
    ("postgresql+psycopg2://hype:pa55@w0rd@h/db", "percent-encode it as %40", "postgresql+psycopg2://***@h/db"),
    ("http://hype:pa55 w0rd@127.0.0.1:5000", "contains whitespace", "percent-encode"),
    ("http://[::1", "malformed tracking URI", "Invalid IPv6 URL"),
    ("http://", "no host", "'http://'"),
    ("http://127.0.0.1:99999", "bad port", "'http://127.0.0.1:99999'"),
    ("sqlite://m.db", "expected sqlite:///PATH", "'sqlite://m.db'"),
    ("ftp://host/x", "unsupported tracking URI", "sqlite:///PATH"),
]


ACCEPTED = [
    "sqlite:///mlflow.db", "sqlite:////abs/mlflow.db", "http://127.0.0.1:5000", "https://h/prefix",
    "http://u:p@ss@h:5000",  # requests takes the last '@' as the end of the password, as we do
    "http://u:p%2Fss@h", "postgresql+psycopg2://u:pa/ss@h/db", "postgresql://u:p%40ss@h/db",
    "mysql+pymysql://u:p@h/db", "databricks", "databricks://profile",
]


def _verdict(uri: str) -> str | None:
    try:
        check_uri(uri)
    except TrackingError as e:
        return str(e)
    return None


def test_check_uri():
    wrong = []
    for uri, message, also in REFUSED:
        text = _verdict(uri)
        if text is None or message not in text or also not in text or "\n" in text \
                or "w0rd" in text or "pa55" in text:
            wrong.append((uri, text))
    wrong += [(uri, _verdict(uri)) for uri in ACCEPTED if _verdict(uri) is not None]
    assert wrong == []


# --- opening: the checks that need the disk or a driver --------------------------------------------


def test_sqlite_uri_of_a_directory_fails_at_once_and_creates_nothing(tmp_path):
    (tmp_path / "store").mkdir()
    start = time.monotonic()
    for create in (True, False):
        with pytest.raises(TrackingUnavailable) as err:
            open_tracking_store(f"sqlite:///{tmp_path / 'store'}", create=create)
        assert f"{tmp_path / 'store'} is a directory; give a database file path, e.g. " \
               f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}" in str(err.value)
    assert time.monotonic() - start < 2  # not MLflow's 100 s of "unable to open database file"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["store"]  # no lock file, no db


def test_reading_commands_never_create_a_sqlite_store(tmp_path):
    with pytest.raises(TrackingUnavailable, match="no tracking database at .*train first"):
        resolve_and_open(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert list(tmp_path.iterdir()) == []


def test_mysql_without_a_driver_says_so(monkeypatch):
    with pytest.raises(TrackingUnavailable) as err:
        resolve_and_open("mysql://hype:pw-s3cret@127.0.0.1/mlflow", create=False, probe=FAST)
    text = str(err.value)
    assert "no database driver" in text and "hype installs no MySQL driver" in text
    assert "s3cret" not in text


def test_unreachable_postgres_is_retried_briefly_then_one_line():
    uri = f"postgresql+psycopg2://hype:pa/ss-s3cret@{HOST}:{free_port()}/mlflow"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        resolve_and_open(uri, create=False, probe=FAST)
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert text.startswith(f"cannot connect to postgresql+psycopg2://***@{HOST}:")
    assert "no answer within 0.3 s" in text and "attempts" in text and "s3cret" not in text


# --- every command: one line, and no part of a password ---------------------------------------------

SECRET = "w0rd-s3cret"
SECRET_URIS = [  # (URI, what the last line says)
    (f"http://hype:pa55/{SECRET}@{HOST}:5000", "percent-encode them (%2F"),
    (f"https://hype:pa55/{SECRET}@mlflow.example.com", "percent-encode them (%2F"),
    (f"postgresql+psycopg2://hype:pa55@{SECRET}@{HOST}:5432/db", "percent-encode it as %40"),
    (f"http://hype:pa55@{SECRET}@{HOST}:{{port}}", f"cannot reach tracking server http://***@{HOST}:"),
    (f"http://hype:pa55%2F{SECRET}@{HOST}:{{port}}", f"cannot reach tracking server http://***@{HOST}:"),
    (f"postgresql+psycopg2://hype:pa55/{SECRET}@{HOST}:{{port}}/db",
     f"cannot connect to postgresql+psycopg2://***@{HOST}:"),
]
COMMANDS = {
    "train": lambda tmp: ["train", "--dataset", tmp / "tree.csv", "--epochs", "1", "--quiet",
                          "--checkpoint-dir", tmp / "ckpt"],
    "cleanup": lambda tmp: ["cleanup", "--all-experiments"],
    "export": lambda tmp: ["export", "--run-id", "0" * 32, "-o", tmp / "out.tsv"],
    "evaluate": lambda tmp: ["evaluate", "--run-id", "0" * 32],
}


def _invoke(tmp: Path, command: str, uri: str):
    return CliRunner().invoke(cli, [str(a) for a in [*COMMANDS[command](tmp), "--tracking-uri", uri]])


@pytest.fixture
def fast_commands(monkeypatch):
    """Every command's probe FAST, and the variables commands set for themselves restored."""
    from tracker.cleanup import runs
    from tracker.store import open as store_open
    from tracker.training import session

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    monkeypatch.setattr(store_open, "READ_PROBE", FAST)
    monkeypatch.setattr(runs, "RETRY", FAST)
    real = store_open.open_tracking_store
    monkeypatch.setattr(session, "open_tracking_store", lambda uri, **kw: real(uri, **{**kw, "probe": FAST}))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_part_of_a_password_in_any_message(tmp_path, fast_commands, command):
    write_tree_closure(tmp_path / "tree.csv", depth=2)
    for uri, message in SECRET_URIS:
        uri = uri.format(port=free_port())
        start = time.monotonic()
        result = _invoke(tmp_path, command, uri)
        assert time.monotonic() - start < 10, uri
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("Error: ") and message in lines[-1], result.output
        assert SECRET not in result.output and "pa55" not in result.output, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tree.csv"]  # nothing created


@pytest.mark.parametrize("command", ["cleanup", "export", "train"])
def test_the_file_store_is_refused_everywhere_and_never_created(tmp_path, fast_commands, command):
    write_tree_closure(tmp_path / "tree.csv", depth=2)
    for uri in ((tmp_path / "runs").as_uri(), str(tmp_path / "runs")):
        result = _invoke(tmp_path, command, uri)
        assert result.exit_code == 1
        (line,) = result.stderr.splitlines()
        assert "names MLflow's file store" in line and f"sqlite:///{tmp_path / 'mlflow.db'}" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tree.csv"]


# --- a real server, a password with '@', '/' and ':' --------------------------------------------------


def test_a_password_with_at_slash_and_colon_works_and_is_never_shown(basic_auth_server, tmp_path):
    """`train` then `cleanup --run-id` against a basic-auth server, the password in the URI:
    '@' as is (requests ends the password at the last '@'), '/' percent-encoded (it would end the
    host). No part of it is printed, tagged, logged as a param, or written to the run folder."""
    from tests.test_auth import _admin, _cheap_hashes, _env, _get_run

    server = basic_auth_server
    parts = [secrets.token_hex(6) for _ in range(3)]
    password = f"{parts[0]}@{parts[1]}/{parts[2]}:x"  # at least 12 characters for basic auth
    user = "atslash"
    server.create_user(user, password)
    _cheap_hashes(server, {user: password})
    exp_id = _admin(server, "POST", "/api/2.0/mlflow/experiments/create", json={"name": "at-slash"})
    server.grant(user, exp_id["experiment_id"], "MANAGE")
    host = server.url.removeprefix("http://")
    uri = f"http://{user}:{quote(password, safe='@:')}@{host}"
    assert "@" in userinfo_of(uri) and "%2F" in uri
    write_tree_closure(tmp_path / "tree_closure.csv", depth=2)

    def cli_run(*args):
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args), "--tracking-uri", uri],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    output = cli_run("train", "--dataset", tmp_path / "tree_closure.csv", "--experiment", "at-slash",
                     "--checkpoint-dir", tmp_path / "ckpt", "--dim", "2", "--epochs", "2", "--burnin", "1",
                     "--negs", "4", "--keep-checkpoints", "1", "--no-keep-best", "--monitor", "loss",
                     "--quiet", "--no-pyfunc")
    (folder,) = (tmp_path / "ckpt").iterdir()
    output += cli_run("cleanup", "--run-id", folder.name, "--keep", "1")
    assert f"http://***@{host}" in output  # the store is named, without its credentials

    run = _get_run(server, folder.name)
    assert run["info"]["status"] == "FINISHED"
    recorded = [kv for item in run["data"].get("params", []) + run["data"].get("tags", [])
                for kv in (item["key"], item["value"])]
    files = [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()
             and p.name != "tree_closure.csv"]  # the manifest, the checkpoints, the final model
    assert (folder / MANIFEST_NAME).is_file()
    log = server.server.log_path.read_text(errors="replace")
    for where, text in [("output", output), ("params and tags", "\n".join(recorded)),
                        ("run folder", "\n".join(files)), ("server log", log)]:
        for part in parts:
            assert part not in text, f"{part!r} of the password in the {where}"
