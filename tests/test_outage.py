"""The tracking server goes away for 30 s in the middle of a run, then comes back.

The trainer talks to a proxied `mlflow server` (SQLite backend) with MLflow's own HTTP retries
off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so hype's RetryPolicy (60 s in all, per call) is what
rides out the outage. Once a few checkpoints are stored, the server's process group is killed
(SIGKILL: in-flight requests fail) the moment a new checkpoint appears locally, so the trainer
is caught uploading it; a new server on the same port, backend and artifact folder answers
again after 30 s.

A watcher polls the run's local folder and the server's artifact folder (on disk, which it can
read while the server is down). A checkpoint may leave the local folder only after the store
has held it: one whose upload was never confirmed must never be deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.datasets import write_tree_closure
from tests.servers import free_port, mlflow_server
from tracker import layout
from tracker.checkpoints.files import load
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy import names

ROOT = Path(__file__).resolve().parent.parent
OUTAGE_S = 30.0
KEEP = 3
STORED_BEFORE_STOP = 4  # checkpoints confirmed stored before the server is stopped


def _epoch_files(folder: Path | None) -> set[str]:
    if folder is None or not folder.is_dir():
        return set()
    return {f.name for f in folder.iterdir() if names.parse_checkpoint_name(f.name)}


class FolderWatcher(threading.Thread):
    """Every few ms: which epoch checkpoints are local, and which the store's disk holds.

    With `stop_server`, it calls it once, at the first poll after `after` checkpoints were
    stored that finds a local checkpoint newer than any the store ever held: the trainer has
    just renamed it into place and is uploading it, so the outage starts mid-upload.
    """

    def __init__(self, ckpt_root: Path, artifacts_dir: Path, stop_server=None, after: int = 0):
        super().__init__(daemon=True)
        self.ckpt_root, self.artifacts_dir = ckpt_root, artifacts_dir
        self.stop_server, self.after = stop_server, after
        self.stopped = threading.Event()
        self.stopped_at = 0.0  # time.monotonic() of the stop
        self.at_stop: tuple[set[str], set[str]] = (set(), set())  # (local, stored) then
        self.ever_local: set[str] = set()
        self.ever_stored: set[str] = set()
        self.lost: list[str] = []  # left the local folder before the store ever held it
        self.done = threading.Event()

    def _folders(self) -> tuple[Path | None, Path | None]:
        runs = [d for d in self.ckpt_root.iterdir() if d.is_dir()] if self.ckpt_root.is_dir() else []
        if len(runs) != 1:
            return None, None
        stored = list(self.artifacts_dir.glob(f"*/{runs[0].name}/artifacts/{layout.CHECKPOINT_FOLDER}"))
        return runs[0], stored[0] if stored else None

    def run(self) -> None:
        while not self.done.is_set():
            local_dir, store_dir = self._folders()
            # store first: a file uploaded and then deleted locally between the two listings
            # is then seen in the store, not reported lost by mistake
            stored = _epoch_files(store_dir)
            self.ever_stored |= stored
            local = _epoch_files(local_dir)
            self.lost += sorted(self.ever_local - local - self.ever_stored)
            self.ever_local |= local
            newest = max(local, key=lambda n: names.parse_checkpoint_name(n).epoch, default=None)
            if self.stop_server and not self.stopped.is_set() and len(self.ever_stored) >= self.after \
                    and newest is not None and newest not in self.ever_stored:
                self.stop_server()
                self.stopped_at = time.monotonic()
                self.at_stop = (local, stored)
                self.stopped.set()
            time.sleep(0.002)


def _trainer(cmd_tail: list[str], url: str, ckpt: Path, cwd: Path, log: list) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", url, "--checkpoint-dir",
         str(ckpt), "--quiet", *cmd_tail],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)

    def read():
        for line in proc.stdout:
            log.append((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()
    return proc


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    return proc.wait(timeout=timeout)  # on a timeout the `trainers` fixture kills its group


@pytest.fixture
def trainers():
    """Trainer processes a test starts; any still running at the end is killed (its group)."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _setup(tmp_path: Path, template: Path, epochs: int):
    """Folders, a migrated SQLite backend for the server, a fixed port, the trainer's args."""
    srv_dir, ckpt, work = tmp_path / "server", tmp_path / "ckpt", tmp_path / "work"
    srv_dir.mkdir()
    work.mkdir()
    shutil.copy(template, srv_dir / "mlflow.db")
    dataset = write_tree_closure(tmp_path / "tree.csv", branching=3, depth=3)
    args = ["--dataset", str(dataset), "--epochs", str(epochs), "--keep-checkpoints", str(KEEP),
            "--eval-every", "2", "--burnin", "2", "--patience", "1000", "--dim", "2", "--negs", "5",
            "--no-pyfunc", "--force"]
    return srv_dir, ckpt, work, f"sqlite:///{srv_dir / 'mlflow.db'}", free_port(), args


@pytest.mark.slow
def test_server_down_for_30_s_mid_run_loses_nothing(tmp_path, _migrated_sqlite_db, trainers):
    srv_dir, ckpt, work, backend, port, args = _setup(tmp_path, _migrated_sqlite_db, epochs=40)
    log: list[tuple[float, str]] = []

    with mlflow_server(srv_dir, backend_uri=backend, port=port) as server:
        watcher = FolderWatcher(ckpt, server.artifacts_dir, after=STORED_BEFORE_STOP,
                                stop_server=lambda: os.killpg(server.pgid, signal.SIGKILL))
        watcher.start()
        proc = _trainer(args, server.url, ckpt, work, log)
        trainers.append(proc)
        _wait_for(lambda: watcher.stopped.is_set() or proc.poll() is not None, 120,
                  f"{STORED_BEFORE_STOP} stored checkpoints and a new one uploading")
        assert proc.poll() is None, "\n".join(line for _, line in log)
        down_at = watcher.stopped_at
    # the server's group is dead (SIGKILL); leaving the block reaped it and checked it is gone
    local_at_stop, stored_at_stop = watcher.at_stop
    # Down for OUTAGE_S until the new server answers: start it early by half the first start's
    # time (a loaded machine takes up to 15 s), so the outage is not 30 s plus a slow start.
    time.sleep(max(OUTAGE_S - server.startup_s / 2 - (time.monotonic() - down_at), 0))
    run_dir = next(ckpt.iterdir())
    # the trainer is blocked in a retry: what it holds locally that the store never held
    never_stored = watcher.ever_local - watcher.ever_stored
    local_during = _epoch_files(run_dir)
    shutil.copy(server.log_path, srv_dir / "mlflow-server-before-outage.log")
    with mlflow_server(srv_dir, backend_uri=backend, port=port) as server:
        up_at = time.monotonic()
        rc = _finish(proc)
        continued = rc == 0
        output = [line for _, line in log]
        if not continued:
            # Stopping is allowed too, with one line that says how to resume; then resume.
            errors = [line for line in output if line.startswith("Error:")]
            assert len(errors) == 1 and f"--resume {run_dir.name}" in errors[0], "\n".join(output)
            trainers.append(_trainer(["--resume", run_dir.name], server.url, ckpt, work, log))
            assert _finish(trainers[-1]) == 0, "\n".join(line for _, line in log)
        watcher.done.set()
        watcher.join()
        client = MlflowClient(server.url)
        assert client.get_run(run_dir.name).info.status == "FINISHED"
        tracked = TrackedCheckpoints(run_dir.name, client=client).list()
        final = {a.path: a.file_size for a in client.list_artifacts(run_dir.name, layout.FINAL_FOLDER)}

    outage = up_at - down_at
    assert outage >= OUTAGE_S
    after = [(t, line) for t, line in log if t > down_at]
    routine = ("Checkpoint saved:", "Deleted old checkpoint:")  # shown only for the first 2 after
    printed = [f"{t - down_at:+6.1f} s  {line}" for i, (t, line) in enumerate(after)
               if i < 2 or not line.startswith(routine)]
    print(f"\nserver down {outage:.1f} s; at the stop local {sorted(local_at_stop)}, stored "
          f"{sorted(stored_at_stop)}; during the outage local {sorted(local_during)}, never stored "
          f"{sorted(never_stored)}; trainer "
          f"{'continued' if continued else 'stopped'}; it printed, in seconds since the stop:\n"
          + "\n".join(printed))
    # never lost: nothing left the local folder before the store held it
    assert watcher.lost == [], f"deleted locally before the store held them: {watcher.lost}"
    assert local_at_stop - stored_at_stop <= local_during  # the one being uploaded stayed
    assert never_stored <= local_during
    deleted = [line.split()[3] for line in output if line.startswith("Deleted old checkpoint:")]
    assert deleted and set(deleted) <= watcher.ever_stored
    # the final retained sets agree, and every file loads
    local = {f.name: f.stat().st_size for f in run_dir.iterdir() if names.parse_checkpoint_name(f.name)}
    assert local == tracked
    assert sorted(names.parse_checkpoint_name(n).epoch for n in local)[-KEEP:] == [38, 39, 40]
    for name in local:
        load(run_dir / name)
    final_path = run_dir / names.final_name("tree")
    assert load(final_path)["final"] is True
    assert final == {f"{layout.FINAL_FOLDER}/{final_path.name}": final_path.stat().st_size}
    assert not list(run_dir.glob("*.tmp"))
    assert continued, (f"the trainer stopped during a {outage:.0f} s outage, shorter than its 60 s "
                       f"retry budget:\n" + "\n".join(output))


@pytest.mark.slow
def test_server_down_while_finishing_the_run_is_ridden_out(tmp_path, _migrated_sqlite_db, trainers):
    """After the final model is stored, finish() still logs the final metrics, the plot, the tags
    and FINISHED: those calls retry too (an outage there used to end in a traceback)."""
    srv_dir, ckpt, work, backend, port, args = _setup(tmp_path, _migrated_sqlite_db, epochs=6)
    log: list[tuple[float, str]] = []
    with mlflow_server(srv_dir, backend_uri=backend, port=port) as server:
        proc = _trainer(args, server.url, ckpt, work, log)
        trainers.append(proc)
        final = f"*/*/artifacts/{layout.FINAL_FOLDER}/{names.final_name('tree')}"
        _wait_for(lambda: any(server.artifacts_dir.glob(final)) or proc.poll() is not None, 120,
                  "the final model in the store")
        os.killpg(server.pgid, signal.SIGKILL)
        assert proc.poll() is None, "\n".join(line for _, line in log)
    time.sleep(2)
    with mlflow_server(srv_dir, backend_uri=backend, port=port) as server:
        assert _finish(proc) == 0, "\n".join(line for _, line in log)
        run_id = next(ckpt.iterdir()).name
        run = MlflowClient(server.url).get_run(run_id)
        plots = MlflowClient(server.url).list_artifacts(run_id, layout.PLOT_FOLDER)
    assert run.info.status == "FINISHED"
    assert {"final_map", "final_mean_rank"} <= set(run.data.metrics)
    assert run.data.tags[layout.TAG_STOP_REASON] == "finished: reached 6 epochs"
    assert [a.path for a in plots] == [f"{layout.PLOT_FOLDER}/poincare_disk.png"]
