"""A new embedded store is created atomically: a kill while MLflow makes its tables leaves no
store or a complete one (the short form of tests/stress/store_create.py, 20 trials there), and a
half-made store from before is named, with how to recover."""

from __future__ import annotations

import signal
import sqlite3

import pytest
from click.testing import CliRunner

from cli import cli
from tests.stress.store_create import _start, trial
from tracker.store.errors import TrackingUnavailable
from tracker.store.open import open_tracking_store


@pytest.mark.parametrize("delay_s, sig", [(0.4, signal.SIGKILL),
                                          (0.3, signal.SIGINT)])
def test_a_kill_during_creation_leaves_a_usable_store(tmp_path, delay_s, sig):
    assert trial(tmp_path / "t", delay_s, sig) is None
    leftovers = [p.name for p in (tmp_path / "t").iterdir() if ".creating-" in p.name]
    assert leftovers == []


def _half_made(path):
    # what an interrupted in-place creation left: some tables, no finished migration, no runs
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE secrets (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("CREATE TABLE _alembic_tmp_trace_tags (key VARCHAR(250))")
    conn.close()


def test_a_half_made_store_is_named_with_how_to_recover(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    _half_made(db)
    with pytest.raises(TrackingUnavailable, match="half-created tracking store") as e:
        open_tracking_store(f"sqlite:///{db}")
    assert f"mv {db} {db}.broken" in str(e.value)
    r = CliRunner().invoke(cli, ["train", "--tracking-uri", f"sqlite:///{db}", "--epochs", "1", "--quiet"])
    assert r.exit_code == 1 and "half-created" in r.output
    assert len(r.output.strip().splitlines()) == 1
    (tmp_path / "mlflow.db").rename(tmp_path / "mlflow.db.broken")
    again = _start(f"sqlite:///{db}", tmp_path)  # the advice works: a new process, a fresh store
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert len(out.strip()) == 32  # a run id
