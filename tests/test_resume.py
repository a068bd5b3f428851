"""Kill -9 in the middle of a tracked run, resume it, and get the run an uninterrupted one gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.policy.names import parse_checkpoint_name

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--epochs", "200", "--burnin", "2", "--lr", "1.0", "--eval-every", "2", "--min-delta", "0.01",
        "--patience", "2", "--keep-checkpoints", "3", "--quiet", "--no-pyfunc"]


def _cli(tmp: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
         "--checkpoint-dir", str(tmp / "ckpt"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def _finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _summary(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    steps = sorted({m.step for m in client.get_metric_history(run_id, "map")})
    return {"status": run.info.status, "stop": run.data.tags[layout.TAG_STOP_REASON],
            "best": run.data.tags[layout.TAG_BEST_EPOCH], "last_step": steps[-1]}


def _tracked(client, run_id):
    return sorted(a.path.split("/")[-1] for a in client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER))


def test_sigkill_between_evaluations_then_resume_stops_at_the_same_epoch(tmp_path):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir()
    dir_.mkdir()
    _finished(_cli(ref_dir, *ARGS))
    ref_client = MlflowClient(f"sqlite:///{ref_dir}/mlflow.db")
    ref_run = ref_client.search_runs([ref_client.get_experiment_by_name("hype").experiment_id])[0]
    reference = _summary(ref_client, ref_run.info.run_id)
    assert reference["stop"].startswith("stopped: no improvement")

    proc = _cli(dir_, *ARGS)
    deadline = time.monotonic() + 120
    target = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((dir_ / "ckpt").glob("*/mammal_epoch0021.pth"))  # between evals 20 and 22
        if found:
            target = found[0]
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.communicate()
    assert target is not None, "training ended before the kill"
    assert proc.returncode == -signal.SIGKILL
    run_id = target.parent.name
    client = MlflowClient(f"sqlite:///{dir_}/mlflow.db")
    assert client.get_run(run_id).info.status == "RUNNING"  # it died without closing the run

    out = _finished(_cli(dir_, "--resume", run_id, "--quiet"))
    assert "Resuming run" in out
    resumed = _summary(client, run_id)
    assert resumed == reference  # same stop epoch, best epoch and reason as uninterrupted
    # consistent retained set: local == tracked == newest 3 (+ best), plus the final model
    local = sorted(p.name for p in target.parent.glob("mammal_epoch*.pth"))
    assert local == _tracked(client, run_id)
    assert len(local) <= 4
    assert (target.parent / "mammal.pth").exists()
    assert not list(target.parent.glob("*.tmp"))


def test_ctrl_c_marks_the_run_killed_and_leaves_no_partial_file(tmp_path):
    proc = _cli(tmp_path, *ARGS)
    deadline = time.monotonic() + 120
    # any checkpoint from epoch 5 on: while the store is busy a waiting one may be replaced by
    # the next, so epoch 5's own file need never exist (on a fast machine it often does not)
    while (time.monotonic() < deadline and proc.poll() is None
           and not any(parse_checkpoint_name(p.name).epoch >= 5
                       for p in (tmp_path / "ckpt").glob("*/mammal_epoch*.pth"))):
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before the Ctrl+C"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "marked KILLED" in out and "--resume" in out
    run_dir = next((tmp_path / "ckpt").iterdir())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_dir.name).info.status == "KILLED"
    assert not list(run_dir.glob("*.tmp"))
    local = {p.name for p in run_dir.glob("mammal_epoch*.pth")}
    # Ctrl+C waits for the checkpoint being stored and retained: both sets are whole
    assert local and set(_tracked(client, run_dir.name)) == local


@pytest.mark.parametrize("fault", ["epoch:3:INT", "upload:3:INT", "delete:1:INT", "delete:2:INT"])
def test_ctrl_c_at_each_tracking_moment_waits_for_the_write_then_resumes(tmp_path, fault):
    # SIGINT lands exactly mid-write: e.g. "delete" is after the tracked copy of an old
    # checkpoint is gone and before its local copy is; a torn write would leave them unequal.
    out, _ = _cli(tmp_path, *ARGS, env={**os.environ, "HYPE_FAULT": fault}).communicate(timeout=120)
    assert f"SIGINT at {fault.split(':')[0]}" in out and "finishing the tracking write" in out
    assert "marked KILLED" in out
    run_dir = next((tmp_path / "ckpt").iterdir())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_dir.name).info.status == "KILLED"
    local = {p.name for p in run_dir.glob("mammal_epoch*.pth")}
    assert local and set(_tracked(client, run_dir.name)) == local
    assert len(local) <= 3 and not list(run_dir.glob("*.tmp"))
    _finished(_cli(tmp_path, "--resume", run_dir.name, "--quiet"))
    assert client.get_run(run_dir.name).info.status == "FINISHED"
    assert {p.name for p in run_dir.glob("mammal_epoch*.pth")} == set(_tracked(client, run_dir.name))


def test_run_killed_before_its_first_checkpoint_starts_again_from_epoch_0(tmp_path):
    # HYPE_FAULT kills the trainer in its first save (the disk guard's size probe)
    proc = _cli(tmp_path, *ARGS, env={**os.environ, "HYPE_FAULT": "save:1"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    run_dir = next((tmp_path / "ckpt").iterdir())
    assert not list(run_dir.glob("mammal_epoch*.pth"))
    out = _finished(_cli(tmp_path, "--resume", run_dir.name, "--quiet"))
    assert "starting it from epoch 0" in out
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_dir.name).info.status == "FINISHED"
    assert (run_dir / "mammal.pth").exists()
