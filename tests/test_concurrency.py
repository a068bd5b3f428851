"""Concurrent writers on one PostgreSQL-backed tracking server: two trainings and a cleanup of
their experiment at the same time. Nothing may fail, lose a retained checkpoint, or delete a
final model.

The trainers are started together. A cleanup process needs about as long to start as the
trainers need to create their runs, so it is started as soon as both trainers have stored a
checkpoint: the three then run at once, and the cleanup (with --include-running) deletes in the
very runs whose trainers are retaining in them, racing them file by file. A finished run with
every checkpoint kept gives the cleanup real work besides.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints.files import load
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "pg-concurrency"
KEEP = 3
# patience 70 with min-delta 1000: each trainer stops ~70 epochs after burn-in, long enough (also
# on a loaded machine) for the cleanup process to start and find both runs still RUNNING
TRAIN = ["--dim", "3", "--epochs", "200", "--burnin", "2", "--eval-every", "1", "--negs", "5", "--lr", "1.0",
         "--monitor", "loss", "--min-delta", "1000", "--patience", "70", "--keep-checkpoints", str(KEEP),
         "--experiment", EXPERIMENT, "--quiet", "--no-pyfunc"]


def _cli(tmp: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_checkpoints(procs, folders, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(list(f.glob("*/tree_epoch*.pth")) for f in folders):
            return
        for p in procs:
            assert p.poll() is None, p.communicate()[0]
        time.sleep(0.02)
    raise AssertionError("the trainers stored no checkpoint in time")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_run(client: MlflowClient, run_id: str, folder: Path, tmp: Path) -> list[int]:
    """The run's retained set is the newest KEEP plus the best on both sides, every file loads,
    and both copies are the same bytes; the final model is on both sides. Returns the epochs."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    best = int(run.data.tags[layout.TAG_BEST_EPOCH])
    store = TrackedCheckpoints(run_id, client=client)
    tracked = store.list()
    local = {p.name: p for p in folder.glob("tree_epoch*.pth")}
    epochs = sorted(int(n[len("tree_epoch"):-len(".pth")]) for n in local)
    newest = max(epochs)
    assert epochs == sorted({best, *range(newest - KEEP + 1, newest + 1)}), (run_id, epochs, best)
    assert sorted(tracked) == sorted(local)
    fetched = tmp / "fetched" / run_id
    for name, path in local.items():
        load(path)  # weights_only; raises on a torn file
        assert tracked[name] == path.stat().st_size
        assert _sha(store.download(name, fetched).read_bytes()) == _sha(path.read_bytes())
    assert [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER)] == [
        f"{layout.FINAL_FOLDER}/tree.pth"]
    assert (folder / "tree.pth").exists()
    return epochs


def test_two_trainings_and_a_cleanup_at_once(pg_mlflow_server, tmp_path):
    url = pg_mlflow_server.url
    client = MlflowClient(url)
    dataset = write_tree_closure(tmp_path / "tree_closure.csv")
    # A finished run that kept every checkpoint: the cleanup deletes most of them meanwhile.
    done = run_training(
        uri=url, graph=load_edge_csv(dataset),
        config=TrainConfig(dim=3, epochs=8, burnin=2, eval_every=1, negs=5, lr=1.0),
        tconfig=TrackerConfig(store_every=True, model_name="tree", keep=None, monitor="loss", patience=100,
                              checkpoint_root=tmp_path / "finished", log_pyfunc=False),
        experiment=EXPERIMENT, progress=False)

    folders = [tmp_path / "a", tmp_path / "b"]
    trainers = [_cli(tmp_path, "train", "--tracking-uri", url, "--dataset", str(dataset),
                     "--checkpoint-dir", str(f), *TRAIN) for f in folders]
    _wait_for_checkpoints(trainers, folders)
    assert all(p.poll() is None for p in trainers)  # both mid-training when the cleanup starts
    cleanup = _cli(tmp_path, "cleanup", "--experiment", EXPERIMENT, "--keep", str(KEEP), "--include-running",
                   "--tracking-uri", url)
    cleanup_out = cleanup.communicate(timeout=300)[0]
    overlap = [p.poll() is None for p in trainers]  # still training when the cleanup ended?
    outputs = [p.communicate(timeout=300)[0] for p in trainers] + [cleanup_out]
    codes = [p.returncode for p in (*trainers, cleanup)]
    assert codes == [0, 0, 0], "\n\n".join(outputs)

    ids = [next(f.iterdir()).name for f in folders]
    for run_id in ids:  # the cleanup saw both trainers' runs while they were RUNNING
        assert f"run {run_id} (experiment '{EXPERIMENT}', RUNNING)" in cleanup_out, cleanup_out
    print(f"\n{cleanup_out}\ntrainers still running when the cleanup ended: {overlap}")
    for run_id, folder, out in zip(ids, folders, outputs, strict=False):
        epochs = _check_run(client, run_id, folder / run_id, tmp_path)
        print(f"trainer {run_id}: retained epochs {epochs}")
        assert "ERROR" not in out and "WARNING" not in out
    epochs = _check_run(client, done.run_id, tmp_path / "finished" / done.run_id, tmp_path)
    assert len(epochs) <= KEEP + 1  # the finished run was cleaned from 8 checkpoints
