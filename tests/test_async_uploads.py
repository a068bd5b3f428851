"""Checkpoints are stored off the training thread: with a slow artifact store training goes on,
at most the bound waits, training says once that it waits, and the run ends consistent.
A real SQLite store; the artifact repository's uploads are slowed on purpose (a throttle)."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.training import uploader
from tracker.training.callbacks import TrackedTraining

SLOW_S = 0.3  # each upload


@pytest.fixture
def throttled(monkeypatch):
    """Slow uploads; record, at each upload, how far training had got (the newest epoch ended)."""
    seen = {"ended": 0, "gaps": [], "thread": []}  # thread: (its name, the newest epoch ended)
    real_upload, real_end = TrackedCheckpoints.upload, TrackedTraining.on_epoch_end

    def upload(self, path):
        epoch = int(str(path).rsplit("epoch", 1)[1].split(".")[0])
        seen["gaps"].append(seen["ended"] - epoch)
        seen["thread"].append((threading.current_thread().name, seen["ended"]))
        time.sleep(SLOW_S)
        return real_upload(self, path)

    def on_epoch_end(self, result, state):
        seen["ended"] = result.epoch
        return real_end(self, result, state)

    monkeypatch.setattr(TrackedCheckpoints, "upload", upload)
    monkeypatch.setattr(TrackedTraining, "on_epoch_end", on_epoch_end)
    return seen


def _uploader_then_drain(threads) -> bool:
    """The uploads ran on the uploader, then (once the run's end took over) on the run's thread
    only: never the two interleaved, which would store checkpoints out of order."""
    names = [name for name, _ in threads]
    k = names.index("MainThread") if "MainThread" in names else len(names)
    return set(names[:k]) <= {"hype-uploader"} and set(names[k:]) <= {"MainThread"}


def _train(sqlite_tracking, tmp_path, *extra):
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, [str(a) for a in (
        "train", "--dataset", data, "--tracking-uri", sqlite_tracking.tracking_uri, "--checkpoint-dir",
        tmp_path / "ck", "--dim", "2", "--epochs", "8", "--burnin", "1", "--eval-every", "4", "--negs", "4",
        "--quiet", "--no-pyfunc", "--keep-checkpoints", "2", "--no-keep-best", "--patience", "100", *extra)])
    assert r.exit_code == 0, r.output
    (run_dir,) = (tmp_path / "ck").iterdir()
    return r.output, run_dir, time.perf_counter() - t0


def test_training_goes_on_while_uploads_are_slow_and_the_bound_holds(sqlite_tracking, tmp_path, throttled):
    out, run_dir, _ = _train(sqlite_tracking, tmp_path, "--store-every-checkpoint")
    gaps = throttled["gaps"]
    assert len(gaps) == 8
    # while training ran, every upload was the uploader's; at the end, the run's thread takes
    # over what the uploader had not started (the uploader may run at the idle priority)
    assert {name for name, ended in throttled["thread"] if ended < 8} == {"hype-uploader"}
    assert throttled["thread"][-1] == ("MainThread", 8)
    assert _uploader_then_drain(throttled["thread"])
    assert max(gaps) >= 2  # training was epochs ahead of the upload in progress
    # the upload in progress, 2 queued, and the epoch whose hand-over waits: never more
    assert max(gaps) <= 2 + 1
    assert out.count("Training waits for the tracking store: 2 checkpoints are queued") == 1
    client = MlflowClient(sqlite_tracking.tracking_uri)
    run = client.get_run(run_dir.name)
    assert run.info.status == "FINISHED" and run.data.tags[layout.TAG_RETAINED_EPOCHS] == "7,8"
    listed = client.list_artifacts(run_dir.name, "hype_checkpoints")
    tracked = sorted(a.path.rsplit("/", 1)[1] for a in listed)
    assert tracked == sorted(p.name for p in run_dir.glob("tree_epoch*.pth")) == [
        "tree_epoch0007.pth", "tree_epoch0008.pth"]


def test_by_default_training_does_not_wait_checkpoints_only_newest_n_keeps_are_replaced(
        sqlite_tracking, tmp_path, throttled, superseding):
    """The default: at the bound, a waiting checkpoint that only newest N keeps is replaced by the
    next one. Training never waits; every epoch's metrics still go in; the last one is stored."""
    out, run_dir, _ = _train(sqlite_tracking, tmp_path)
    uploaded = len(throttled["gaps"])
    replaced = 8 - uploaded
    assert "Training waits" not in out
    assert replaced >= 1  # tiny epochs against 0.3 s per upload (fewer when epoch 1 compiles)
    assert (f"{replaced} checkpoint(s) were replaced by the next epoch's while the tracking store "
            "was busy") in out
    # a replacement means training ran ahead of the uploads (the bound itself: test_supersede)
    assert throttled["thread"][0][0] == "hype-uploader"  # the end's drain takes over the rest
    assert _uploader_then_drain(throttled["thread"])
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert sorted(m.step for m in client.get_metric_history(run_dir.name, "loss")) == list(range(1, 9))
    run = client.get_run(run_dir.name)
    retained = [int(e) for e in run.data.tags[layout.TAG_RETAINED_EPOCHS].split(",")]
    assert retained[-1] == 8 and len(retained) == 2  # the last epoch is always stored
    listed = sorted(a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run_dir.name, "hype_checkpoints"))
    assert listed == sorted(p.name for p in run_dir.glob("tree_epoch*.pth")) == [
        f"tree_epoch{e:04d}.pth" for e in retained]


def test_the_synchronous_path_stores_each_checkpoint_before_the_next_epoch(sqlite_tracking, tmp_path,
                                                                           throttled):
    out, run_dir, _ = _train(sqlite_tracking, tmp_path, "--upload-queue", "0")
    assert throttled["gaps"] == [0] * 8 and "Training waits" not in out
    assert {name for name, _ in throttled["thread"]} == {threading.main_thread().name}


def test_a_failed_upload_stops_training_with_the_resume_hint(sqlite_tracking, tmp_path, monkeypatch):
    from tracker.store.errors import StoreError

    def refuse(self, path):
        if "epoch0003" in str(path):
            raise StoreError("the store refused it")
        return real(self, path)

    real = TrackedCheckpoints.upload
    monkeypatch.setattr(TrackedCheckpoints, "upload", refuse)
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    r = CliRunner().invoke(cli, [str(a) for a in (
        "train", "--dataset", data, "--tracking-uri", sqlite_tracking.tracking_uri, "--checkpoint-dir",
        tmp_path / "ck", "--dim", "2", "--epochs", "30", "--burnin", "1", "--negs", "4", "--quiet",
        "--no-pyfunc", "--keep-checkpoints", "2", "--no-keep-best")])
    assert r.exit_code == 1
    (run_dir,) = (tmp_path / "ck").iterdir()
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: could not store tree_epoch0003.pth in the tracking store (the store refused it); the "
        f"checkpoint is safe at {run_dir / 'tree_epoch0003.pth'} and nothing was deleted. Resume with: "
        f"python cli.py train --resume {run_dir.name}")
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert client.get_run(run_dir.name).info.status == "FAILED"
    assert max(m.step for m in client.get_metric_history(run_dir.name, "loss")) < 30  # stopped early


def test_the_queue_raises_the_workers_failure_on_the_training_thread():
    q = uploader.CheckpointQueue(1, say=lambda m: None)

    def boom():
        raise RuntimeError("upload failed")

    q.submit(boom)
    with pytest.raises(RuntimeError, match="upload failed"):
        q.drain()
    q.submit(lambda: None)  # the failure was handed over once; the queue goes on
    q.drain()
    q.close()
    with pytest.raises(ValueError):
        uploader.CheckpointQueue(0, say=print)


def test_with_every_core_taken_the_uploader_is_paced_and_the_run_ends_whole(
        sqlite_tracking, tmp_path, monkeypatch, superseding):
    """As if the ranks took every core: the uploader starts a job no sooner than its last one's
    cost / 2% (tens of ms -> a second or more), so most of 30 tiny epochs' checkpoints are
    replaced; training never waits for it, every epoch's metrics are in the store, the last
    epoch is stored, both sides hold the same checkpoints, and the end says why."""
    from tracker.training.config import TrackerConfig

    monkeypatch.setattr(TrackerConfig, "uploader_yields", staticmethod(lambda workers: True))
    out, run_dir, _ = _train(sqlite_tracking, tmp_path, "--epochs", "30")
    assert "Training waits" not in out
    assert out.count("Training goes on while") == 1  # paced, or busy if a job was running then
    replaced = int(out.split(" checkpoint(s) were replaced")[0].rsplit(None, 1)[-1])
    assert replaced >= 15, out  # 30 epochs in a few seconds against a pace of a second or more
    assert "paced to 2% of a core while the ranks took every core" in out
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert sorted(m.step for m in client.get_metric_history(run_dir.name, "loss")) == list(range(1, 31))
    run = client.get_run(run_dir.name)
    retained = [int(e) for e in run.data.tags[layout.TAG_RETAINED_EPOCHS].split(",")]
    assert retained[-1] == 30 and len(retained) <= 2
    listed = sorted(a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run_dir.name, "hype_checkpoints"))
    assert listed == sorted(p.name for p in run_dir.glob("tree_epoch*.pth")) == [
        f"tree_epoch{e:04d}.pth" for e in retained]
