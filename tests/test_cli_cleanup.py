"""`cli.py cleanup` end to end: CliRunner and real subprocesses, folders and a SQLite store under
tmp_path, runs made by the real trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.servers import free_port
from tests.test_cleanup_tracked import local_names, tracked_names, train
from tracker import layout
from tracker.cleanup import runs as cleanup_tracked
from tracker.store.retry import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(cli, ["cleanup", *args], catch_exceptions=False)


def write(directory, name, size=100):
    (directory / name).write_bytes(b"x" * size)


def names(directory):
    return sorted(p.name for p in directory.iterdir())


# --- local mode -------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """Both name formats, two models, a final model, look-alikes and links, in one folder."""
    d = tmp_path / "ckpts"
    d.mkdir()
    for e in range(1, 5):
        write(d, f"mammals_epoch{e:04d}.pth", size=1000)
        write(d, f"legacy.pth.{e}", size=10)
    for name in ("mammals.pth", "legacy.pth", "mammals_epoch0001.pth.tmp", "notes_epoch3.txt",
                 "mammals_epoch9.PTH"):
        write(d, name)
    (d / "mammals_epoch0000.pth").mkdir()  # a directory named like a checkpoint
    outside = tmp_path / "precious.pth"
    write(tmp_path, "precious.pth", size=5)
    os.symlink(outside, d / "mammals_epoch0002.pth.link")
    os.symlink(outside, d / "legacy.pth.0")  # a link named like the oldest checkpoint
    return d


KEPT = ["legacy.pth", "legacy.pth.0", "legacy.pth.3", "legacy.pth.4", "mammals.pth",
        "mammals_epoch0000.pth", "mammals_epoch0001.pth.tmp", "mammals_epoch0002.pth.link",
        "mammals_epoch0003.pth", "mammals_epoch0004.pth", "mammals_epoch9.PTH", "notes_epoch3.txt"]


def test_local_keeps_newest_per_model_and_never_touches_look_alikes(folder, tmp_path):
    result = run("--directory", str(folder), "--keep", "2")
    assert result.exit_code == 0, result.output
    assert names(folder) == sorted(KEPT)
    assert (tmp_path / "precious.pth").read_bytes() == b"x" * 5
    out = result.output
    assert f"{folder}: model legacy; keeping newest 2" in out
    assert f"{folder}: model mammals; keeping newest 2" in out
    assert "kept          legacy.pth.3: newest 2 [local]" in out
    assert "deleted       mammals_epoch0001.pth (1000 B): older than the newest 2 [local]" in out
    assert "left alone    legacy.pth.0: symlink" in out
    assert "left alone    mammals.pth: final model: never deleted" in out
    assert out.splitlines()[-1] == "2 models in a flat folder: deleted 4 checkpoints, freed 2.0 KB"


def test_local_dry_run_text_and_json_delete_nothing(folder):
    before = names(folder)
    result = run("--directory", str(folder), "--keep", "1", "--dry-run")
    assert result.exit_code == 0
    assert names(folder) == before
    assert "would delete  legacy.pth.1 (10 B)" in result.output
    assert result.output.splitlines()[-1] == (
        "2 models in a flat folder: would delete 6 checkpoints, would free 3.0 KB (dry run: nothing deleted)")
    report = json.loads(run("--directory", str(folder), "--keep", "1", "--dry-run", "--json").output)
    assert names(folder) == before
    assert report["dry_run"] is True
    assert {k: report["summary"][k] for k in ("deleted", "failed", "bytes")} == {
        "deleted": 6, "failed": 0, "bytes": 3030}
    assert [m["model"] for m in report["targets"]] == ["legacy", "mammals"]
    assert [c["epoch"] for c in report["targets"][1]["checkpoints"] if c["keep"]] == [4]


def test_local_default_directory_is_the_current_one(folder, monkeypatch):
    monkeypatch.chdir(folder)
    assert run("--keep", "3").exit_code == 0
    assert "mammals_epoch0001.pth" not in names(folder) and "mammals_epoch0002.pth" in names(folder)


def test_many_files_with_a_progress_bar(tmp_path):
    for e in range(120):
        write(tmp_path, f"m_epoch{e}.pth", size=1)
    result = run("--directory", str(tmp_path), "--keep", "20")
    assert result.exit_code == 0
    assert names(tmp_path) == sorted(f"m_epoch{e}.pth" for e in range(100, 120))


@pytest.mark.parametrize("keep", ["0", "-3"])
def test_keep_below_one_is_refused(folder, keep):
    before = names(folder)
    result = run("--directory", str(folder), "--keep", keep)
    assert result.exit_code == 2
    assert f"Invalid value for '--keep': {keep} would delete every checkpoint" in result.output
    assert names(folder) == before


def test_bad_directories_are_one_line_errors(tmp_path):
    for path, message in ((tmp_path / "missing", "no such directory"),
                          (ROOT / "cli.py", "not a directory")):
        result = run("--directory", str(path))
        assert result.exit_code == 1
        assert result.output == f"Error: {message}: {path}\n"


def test_a_failed_deletion_gives_a_nonzero_exit_and_the_others_happen(folder, monkeypatch):
    bad = str(folder / "legacy.pth.2")
    real_unlink = os.unlink

    def flaky(path, *a, **k):
        if os.fspath(path) == bad:
            raise PermissionError(13, "Permission denied", bad)
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "unlink", flaky)  # root ignores file modes: inject the failure
    result = run("--directory", str(folder), "--keep", "2")
    assert result.exit_code == 1
    assert "FAILED        legacy.pth.2 (10 B):" in result.output and "Permission denied" in result.output
    assert "some deletions failed" in result.output
    assert sorted(set(names(folder)) - set(KEPT)) == ["legacy.pth.2"]


@pytest.mark.parametrize("args, message", [
    (["--run-id", "x", "--experiment", "e"], "give only one of --run-id, --experiment"),
    (["--directory", ".", "--all-experiments"], "--directory is for local mode"),
    (["--keep-best", "-1"], "is negative"),
    (["--keep-every", "-2"], "is negative"),
])
def test_conflicting_options(args, message):
    result = run(*args)
    assert result.exit_code == 2 and message in result.output


def test_subprocess_exit_codes_and_streams(folder):
    cmd = [sys.executable, "cli.py", "cleanup", "--directory", str(folder), "--keep", "1", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["deleted"] == 6
    done = subprocess.run(cmd[:3] + ["--directory", str(folder / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"Error: no such directory: {folder / 'nope'}\n"


# --- tracking-store mode ----------------------------------------------------------------------


@pytest.fixture
def store(sqlite_tracking, tmp_path, monkeypatch):
    """Two finished runs in experiment "mammals" (one with its MLflow model), one run still
    RUNNING there, and one finished run in experiment "other"; each holds epochs 1..6."""
    uri = sqlite_tracking.tracking_uri
    graph = load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv", depth=2))
    runs = {
        "a": train(uri, graph, tmp_path, experiment="mammals", log_pyfunc=True),
        "b": train(uri, graph, tmp_path, experiment="mammals"),
        "running": train(uri, graph, tmp_path, experiment="mammals", interrupt_before_finish=True,
                         monkeypatch=monkeypatch),
        "other": train(uri, graph, tmp_path, experiment="other"),
    }
    return uri, runs


ALL = [f"tree_epoch{e:04d}.pth" for e in range(1, 7)]
KEPT_2 = ["tree_epoch0003.pth", "tree_epoch0005.pth", "tree_epoch0006.pth"]  # best 3, newest 2


def test_experiment_cleans_finished_runs_skips_running_keeps_final_models(store, tmp_path):
    uri, runs = store
    result = run("--experiment", "mammals", "--keep", "2", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    for key in ("a", "b"):
        assert tracked_names(client, runs[key]) == KEPT_2
        assert local_names(tmp_path, runs[key]) == sorted(KEPT_2 + ["tree.pth"])
        assert tracked_names(client, runs[key], layout.FINAL_FOLDER) == ["tree.pth"]
    assert tracked_names(client, runs["running"]) == ALL
    assert tracked_names(client, runs["other"]) == ALL  # another experiment
    assert f"run {runs['running']} (experiment 'mammals', RUNNING): skipped, status RUNNING" in result.output
    assert result.output.splitlines()[-1].startswith("3 runs (1 skipped): deleted 6 checkpoints, freed ")
    tags = client.get_run(runs["a"]).data.tags
    assert tags[layout.TAG_RETAINED_EPOCHS] == "3,5,6" and tags[layout.TAG_RETAINED] == "3"
    # the MLflow model is untouched and still answers
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"runs:/{runs['a']}/model")
    assert len(model.predict(pd.DataFrame({"u": ["n.0"], "v": ["n"]}))) == 1

    result = run("--experiment", "mammals", "--keep", "2", "--tracking-uri", uri, "--include-running")
    assert tracked_names(client, runs["running"]) == KEPT_2


def test_all_experiments_dry_run_json(store):
    uri, runs = store
    result = run("--all-experiments", "--keep", "1", "--dry-run", "--json", "--tracking-uri", uri)
    assert result.exit_code == 0
    report = json.loads(result.output)
    client = MlflowClient(uri)
    assert all(tracked_names(client, r) == ALL for r in runs.values())
    assert report["dry_run"] is True
    by_id = {r["run_id"]: r for r in report["targets"]}
    assert set(by_id) == set(runs.values())
    assert "RUNNING" in by_id[runs["running"]]["skipped"]
    a = by_id[runs["a"]]
    assert (a["model"], a["best_epoch"]) == ("tree", 3)
    assert [c["name"] for c in a["checkpoints"] if c["status"] == "would delete"] == [
        "tree_epoch0001.pth", "tree_epoch0002.pth", "tree_epoch0004.pth", "tree_epoch0005.pth"]
    assert all(c["local"] and c["tracked"] for c in a["checkpoints"])  # one deletion covers both sides
    assert report["summary"]["targets"] == 4 and report["summary"]["skipped"] == 1
    assert report["summary"]["deleted"] == 3 * 4


def test_unknown_run_experiment_and_store_are_one_line_errors(store, tmp_path, monkeypatch):
    uri, runs = store
    client = MlflowClient(uri)
    for args, message in (
        (["--run-id", "0" * 32], f"Error: no run with id '{'0' * 32}' in {uri}"),
        (["--experiment", "nope"], "Error: no experiment named 'nope' in"),
    ):
        result = run(*args, "--keep", "1", "--tracking-uri", uri)
        assert result.exit_code == 1 and result.output.startswith(message)
        assert len(result.output.splitlines()) == 1
    assert all(tracked_names(client, r) == ALL for r in runs.values())

    missing = tmp_path / "elsewhere" / "mlflow.db"
    result = run("--all-experiments", "--tracking-uri", f"sqlite:///{missing}")
    assert result.exit_code == 1 and "no tracking database at" in result.output
    assert not missing.exists()

    monkeypatch.setattr(cleanup_tracked, "RETRY", RetryPolicy(total_s=0.3, first_delay_s=0.1))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    result = run("--all-experiments", "--tracking-uri", dead)
    assert result.exit_code == 1
    # train's message (one check for every command); the number of attempts depends on timing
    (line,) = result.output.splitlines()
    assert line.startswith(f"Error: cannot reach tracking server {dead}: no answer within 0.3 s (")
    assert line.endswith(" attempts); is it running, and is the address right?")


def test_run_id_in_a_subprocess(store, tmp_path):
    uri, runs = store
    cmd = [sys.executable, "cli.py", "cleanup", "--run-id", runs["b"], "--keep", "2"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}  # the default when --tracking-uri is absent
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"run {runs['b']} (experiment 'mammals', FINISHED): model tree, best epoch 3" in done.stdout
    assert tracked_names(MlflowClient(uri), runs["b"]) == KEPT_2
    assert tracked_names(MlflowClient(uri), runs["a"]) == ALL
