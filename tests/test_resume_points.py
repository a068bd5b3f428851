"""Where a run goes on from: a chosen epoch (--from-epoch), another run's checkpoint (--init-from),
the newest checkpoint that still loads when copies are damaged, a tracked copy repaired from an
intact local one, and a run whose final model a full disk stopped. Real SQLite stores, the CLI."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints.files import load
from tracker.checkpoints.manifest import Manifest
from tracker.training import warm

ARGS = ["--dim", "2", "--burnin", "1", "--eval-every", "1", "--negs", "4", "--lr", "1.0", "--quiet",
        "--no-pyfunc"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _train(uri, tmp_path, *extra, ckpt="ck"):
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    before = set((tmp_path / ckpt).iterdir()) if (tmp_path / ckpt).exists() else set()
    r = invoke("train", "--dataset", data, "--tracking-uri", uri, "--checkpoint-dir", tmp_path / ckpt,
               *ARGS, *extra)
    assert r.exit_code == 0, r.output
    (run_dir,) = set((tmp_path / ckpt).iterdir()) - before
    return run_dir.name, run_dir


def _resume(uri, run_id, *extra):
    return invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", *extra)


def _tracked(root: Path, run_id: str, name: str) -> Path:
    (path,) = root.rglob(f"{run_id}/artifacts/{layout.CHECKPOINT_FOLDER}/{name}")
    return path


def _epochs(run_dir: Path) -> list[int]:
    return sorted(e for e, row in Manifest.open(run_dir, run_id=run_dir.name).entries().items()
                  if row.state != "deleted")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_from_epoch_rolls_back_and_goes_on_from_there(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id, run_dir = _train(uri, tmp_path, "--epochs", "6", "--keep-checkpoints", "3", "--no-keep-best",
                             "--patience", "100")
    assert _epochs(run_dir) == [4, 5, 6]
    old6 = _sha(run_dir / "tree_epoch0006.pth")

    r = _resume(uri, run_id, "--from-epoch", "4", "--lr", "0.5")
    assert r.exit_code == 0, r.output
    assert "Rolling back to epoch 4 (--from-epoch 4): deleting the checkpoints of epochs 5, 6" in r.output
    assert f"Resuming run {run_id} from tree_epoch0004.pth (epoch 4/6)" in r.output
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["hype.resume.1"] == "at epoch 4 (rolled back from epoch 6): lr 1.0 -> 0.5"
    assert _epochs(run_dir) == [4, 5, 6]
    assert _sha(run_dir / "tree_epoch0006.pth") != old6  # trained again, at the new lr
    assert _sha(_tracked(tmp_path, run_id, "tree_epoch0006.pth")) == \
        _sha(run_dir / "tree_epoch0006.pth")
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps.count(5) == 2 and steps.count(6) == 2 and steps.count(4) == 1


def test_from_epoch_needs_a_retained_epoch_and_a_resume(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id, run_dir = _train(uri, tmp_path, "--epochs", "3", "--keep-checkpoints", "2", "--no-keep-best")
    before = {p.name: _sha(p) for p in run_dir.glob("*.pth")}
    r = _resume(uri, run_id, "--from-epoch", "1")
    assert r.exit_code == 1
    assert "--from-epoch 1: run" in r.output and "holds no checkpoint of that epoch (retained epochs: 2, 3)" \
        in r.output
    r = _resume(uri, run_id, "--from-epoch", "3")  # a FINISHED run of 3 epochs: nothing to train
    assert r.exit_code == 1 and "give --epochs N with N > 3" in r.output
    assert {p.name: _sha(p) for p in run_dir.glob("*.pth")} == before
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


def test_init_from_warm_starts_a_new_run_and_links_its_source(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    src, src_dir = _train(uri, tmp_path, "--epochs", "4", "--keep-checkpoints", "2", "--no-keep-best")
    src_files = {p.name: _sha(p) for p in src_dir.iterdir() if not p.name.startswith("hype_manifest")}
    source = load(src_dir / "tree_epoch0003.pth")

    new, new_dir = _train(uri, tmp_path, "--epochs", "1", "--lr", "1e-12", "--init-from", f"{src}:3")
    client = MlflowClient(uri)
    run = client.get_run(new)
    assert run.data.params["init_from"] == f"runs:/{src}/{layout.CHECKPOINT_FOLDER}/tree_epoch0003.pth"
    assert run.data.tags[layout.TAG_INIT_FROM] == f"{src}:3"
    assert run.data.tags[layout.TAG_INIT_FROM_RUN] == src
    exp = client.get_run(src).info.experiment_id
    assert f"(#/experiments/{exp}/runs/{src}?{layout.UI_WORKFLOW})" in run.data.tags[layout.TAG_NOTE]
    after = load(new_dir / "tree_epoch0001.pth")["embeddings"]
    assert torch.allclose(after, source["embeddings"].to(after.dtype), atol=1e-6)  # lr ~0: unchanged
    assert {p.name: _sha(p) for p in src_dir.iterdir() if not p.name.startswith("hype_manifest")} == src_files

    # a checkpoint file works too, and the newest retained epoch is the default
    r = invoke("train", "--dataset", tmp_path / "tree_closure.csv", "--tracking-uri", uri, "--checkpoint-dir",
               tmp_path / "ck", *ARGS, "--epochs", "1", "--init-from", src)
    assert r.exit_code == 0 and f"Warm start from runs:/{src}/{layout.CHECKPOINT_FOLDER}/tree_epoch0004.pth" \
        in r.output, r.output
    r = invoke("train", "--dataset", tmp_path / "tree_closure.csv", "--tracking-uri", uri, "--checkpoint-dir",
               tmp_path / "ck", *ARGS, "--epochs", "1", "--init-from", src_dir / "tree_epoch0004.pth")
    assert r.exit_code == 0 and "Warm start from" in r.output and "13 of 13 nodes" in r.output, r.output


def test_init_from_matches_nodes_by_name():
    assert warm.align(["a", "b", "c"], ["c", "x", "a"]) == ([0, 2], [2, 0])
    assert warm.parse("0" * 32 + ":12") == warm.Spec("0" * 32, 12)
    assert warm.parse("runs/x.pth").path == Path("runs/x.pth")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_a_best_damaged_on_both_sides_is_said_and_the_newest_resumes(sqlite_tracking, tmp_path, monkeypatch):
    """Best (epoch 2, loss: nothing beats it by 1e9) and newest (3) retained; the best is truncated
    locally and in the store. Resume goes on from the newest and says the best's weights are lost."""
    uri = sqlite_tracking.tracking_uri
    run_id, run_dir = _train(uri, tmp_path, "--epochs", "3", "--keep-checkpoints", "1", "--monitor", "loss",
                             "--min-delta", "1e9", "--patience", "100")
    assert _epochs(run_dir) == [2, 3]
    _truncate(run_dir / "tree_epoch0002.pth")
    _truncate(_tracked(tmp_path, run_id, "tree_epoch0002.pth"))
    r = _resume(uri, run_id, "--epochs", "4")
    assert r.exit_code == 0, r.output
    assert "the best checkpoint, epoch 2 (loss=" in r.output and "its weights are lost" in r.output
    assert "Final model (epoch 4): " in r.output  # the weights it holds, not the lost best's epoch
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[layout.TAG_FINAL_EPOCH] == "4"


def test_a_newest_damaged_on_both_sides_resumes_from_the_one_before(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id, run_dir = _train(uri, tmp_path, "--epochs", "3", "--keep-checkpoints", "2", "--no-keep-best",
                             "--patience", "100")
    newest = run_dir / "tree_epoch0003.pth"
    _truncate(newest)
    _truncate(_tracked(tmp_path, run_id, newest.name))
    damaged = newest.read_bytes()
    r = _resume(uri, run_id, "--epochs", "4")
    assert r.exit_code == 0, r.output
    assert "Resuming from epoch 2: 1 newer checkpoint(s) do not load from either copy" in r.output
    assert "Set aside tree_epoch0003.pth as tree_epoch0003.pth.damaged" in r.output
    assert (run_dir / "tree_epoch0003.pth.damaged").read_bytes() == damaged  # kept, not deleted
    assert _epochs(run_dir) == [3, 4]
    load(run_dir / "tree_epoch0003.pth")  # trained again


def test_a_damaged_tracked_copy_is_repaired_from_the_intact_local_one(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id, run_dir = _train(uri, tmp_path, "--epochs", "3", "--keep-checkpoints", "2", "--no-keep-best",
                             "--patience", "100")
    root = tmp_path
    truncated = _tracked(root, run_id, "tree_epoch0002.pth")
    _truncate(truncated)
    flipped = _tracked(root, run_id, "tree_epoch0003.pth")  # same size, other bytes
    data = bytearray(flipped.read_bytes())
    data[-100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    r = _resume(uri, run_id, "--epochs", "4", "--keep-checkpoints", "3")
    assert r.exit_code == 0, r.output
    assert "Repaired the tracked copy of tree_epoch0002.pth: the store held 200 bytes" in r.output
    assert "Repaired the tracked copy of tree_epoch0003.pth: its sha256 differed" in r.output
    for name in ("tree_epoch0002.pth", "tree_epoch0003.pth"):
        assert _sha(_tracked(root, run_id, name)) == _sha(run_dir / name)


def _full_disk_for_the_final_model(monkeypatch):
    real = torch.save

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("final"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    return real


def test_disk_full_while_writing_the_final_model_is_one_line_and_resumable(sqlite_tracking, tmp_path,
                                                                           monkeypatch):
    uri = sqlite_tracking.tracking_uri
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    real = _full_disk_for_the_final_model(monkeypatch)
    r = invoke("train", "--dataset", data, "--tracking-uri", uri, "--checkpoint-dir", tmp_path / "ck", *ARGS,
               "--epochs", "6", "--monitor", "loss", "--min-delta", "1e9", "--patience", "1")
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    (run_dir,) = (tmp_path / "ck").iterdir()
    assert line == (f"Error: could not write the final model {run_dir / 'tree.pth'}: No space left on device;"
                    " "
                    "the run's checkpoints are kept (newest: epoch 3). Free space, then finish it with: "
                    f"python cli.py train --resume {run_dir.name}")
    client = MlflowClient(uri)
    assert client.get_run(run_dir.name).info.status == "FAILED"
    assert not (run_dir / "tree.pth").exists() and not list(run_dir.glob("*.tmp"))

    monkeypatch.setattr(torch, "save", real)  # space freed
    r = _resume(uri, run_dir.name)
    assert r.exit_code == 0, r.output
    assert "had stopped early at epoch 3" in r.output
    run = client.get_run(run_dir.name)
    assert run.info.status == "FINISHED" and run.data.tags[layout.TAG_FINAL_EPOCH] == "2"
    assert max(m.step for m in client.get_metric_history(run_dir.name, "loss")) == 3  # nothing more trained
    finals = [a.path for a in client.list_artifacts(run_dir.name, layout.FINAL_FOLDER)]
    assert finals == ["hype_model/tree.pth"]


def test_disk_full_inside_mlflow_while_logging_the_final_model(sqlite_tracking, tmp_path, monkeypatch):
    from tracker.serving import log

    def full(*a, **k):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            raise RuntimeError("mlflow wrapped it") from e

    monkeypatch.setattr(log, "log_pyfunc", full)
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    args = [a for a in ARGS if a != "--no-pyfunc"]
    r = invoke("train", "--dataset", data, "--tracking-uri", sqlite_tracking.tracking_uri, "--checkpoint-dir",
               tmp_path / "ck", *args, "--epochs", "2")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "could not write the final model" in r.output and "No space left on device" in r.output
