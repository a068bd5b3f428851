"""Multi-process training: --workers K spawns K-1 gloo ranks, torchrun starts them itself.

Real processes throughout: only rank 0 talks to MLflow and writes checkpoints, the stop is
decided once and broadcast, and no rank outlives the run however it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from hype import distributed
from tests.servers import free_port
from tracker import layout

ROOT = Path(__file__).resolve().parent.parent
MAMMALS = ROOT / "data" / "mammal_closure.csv"
FAST = ["--burnin", "10", "--lr", "0.6", "--burnin-multiplier", "0.1", "--eval-every", "10",
        "--quiet", "--no-pyfunc"]


def _train(tmp: Path, *args: str, launcher: list | None = None) -> subprocess.Popen:
    """The CLI in a session of its own, its environment tagged with the tmp dir, so that every
    process it starts (ranks run in sessions of their own) can be found: see _tagged."""
    cmd = [*(launcher or [sys.executable]), str(ROOT / "cli.py"), "train", "--tracking-uri",
           f"sqlite:///{tmp}/mlflow.db", "--checkpoint-dir", str(tmp / "ckpt"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=tmp, env={**os.environ, TAG: str(tmp)})


TAG = "HYPE_TEST_TAG"


def _tagged(tmp: Path) -> list[int]:
    """Live processes whose environment carries this test's tag (inherited by every child)."""
    needle = f"{TAG}={tmp}\0".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            if not zombie and needle in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _ranks(tmp: Path) -> list[int]:
    out = []
    for pid in _tagged(tmp):
        try:
            if b"hype.rank" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def _wait_gone(tmp: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _tagged(tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _only_run(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, "only rank 0 may create a run"
    return client, runs[0]


def _final_map(client, run) -> float:
    return client.get_run(run.info.run_id).data.metrics["final_map"]


def _segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("hype-*")}


def _mapped_segments(pids: list[int]) -> set[str]:
    """The hype-* shared memory segments these processes have mapped."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found |= {line.rsplit("/", 1)[1].split()[0] for line in maps.splitlines() if "/dev/shm/hype-" in line}
    return found


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """The one-worker reference, 60 epochs of FAST on the mammals, trained once for the tests
    that compare with it (a run is reproducible for a seed and a number of workers).
    Returns (its folder, client, run)."""
    tmp = tmp_path_factory.mktemp("one-worker")
    proc = _train(tmp, "--epochs", "60", *FAST)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return (tmp, *_only_run(tmp))


def test_two_workers_train_as_well_as_one_and_only_rank_0_tracks(tmp_path, one_worker):
    before = _segments()
    maps = {}
    for workers in (1, 2):
        if workers == 1:
            tmp, client, run = one_worker
        else:
            tmp = tmp_path / f"w{workers}"
            tmp.mkdir()
            proc = _train(tmp, "--epochs", "60", "--workers", str(workers), *FAST)
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
            client, run = _only_run(tmp)
        assert run.data.params["workers"] == str(workers)
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, 61))
        maps[workers] = _final_map(client, run)
        # one checkpoint per epoch, written by rank 0 alone, retained to the newest 20
        run_dir = tmp / "ckpt" / run.info.run_id
        assert len(list(run_dir.glob("mammal_epoch*.pth"))) == 20
    # Hogwild on one shared embedding: as good as one process (0.84 at 60 epochs)
    assert maps[2] >= maps[1] - 0.03, maps
    assert _segments() <= before, "the shared embedding outlived the run"


def test_the_stop_is_decided_once_and_every_rank_leaves_at_that_epoch(tmp_path):
    proc = _train(tmp_path, "--epochs", "400", "--workers", "2", "--patience", "1", "--min-delta", "0.05",
                  *FAST)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert not _wait_gone(tmp_path, 10), "a rank outlived the run"
    client, run = _only_run(tmp_path)
    stopped = max(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert stopped < 400
    assert "no improvement" in run.data.tags[layout.TAG_STOP_REASON]


def test_ctrl_c_stops_every_rank_and_the_run_resumes_with_two_workers(tmp_path):
    proc = _train(tmp_path, "--epochs", "400", "--workers", "2", "--patience", "100", *FAST)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "ckpt").glob("*/mammal_epoch0005.pth")):
        time.sleep(0.01)
    assert _ranks(tmp_path), "no worker rank was running"
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl+C (the ranks run in sessions of their own)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "marked KILLED" in out, out
    assert not _wait_gone(tmp_path), "a rank outlived Ctrl+C"
    client, run = _only_run(tmp_path)
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    resumed = _train(tmp_path, "--resume", run.info.run_id, "--epochs", "30", "--quiet")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "Resuming run" in out
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert not _wait_gone(tmp_path, 10)


def test_kill_9_of_rank_0_takes_the_other_ranks_down(tmp_path):
    before = _segments()
    proc = _train(tmp_path, "--epochs", "400", "--workers", "2", "--patience", "100", *FAST)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "ckpt").glob("*/mammal_epoch0003.pth")):
        time.sleep(0.01)
    assert _ranks(tmp_path), "no worker rank was running"
    # this run's own segments: the ones its processes map (another file's test may train with
    # workers at the same time, and its segments come and go on their own)
    segments = _mapped_segments([proc.pid, *_ranks(tmp_path)])
    assert segments and segments <= _segments() - before, segments
    proc.kill()  # rank 0 only: the other rank notices its parent is gone and exits
    proc.communicate(timeout=60)
    assert not _wait_gone(tmp_path), "a rank outlived rank 0's kill -9"
    # rank 0 created the shared embedding and could not remove it; its resource tracker did
    assert not (segments & _segments())


def test_torchrun_starts_the_ranks_and_only_rank_0_tracks(tmp_path, one_worker):
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    tmp = tmp_path / "torchrun"
    tmp.mkdir()
    proc = _train(tmp, "--epochs", "60", "--dataset", str(MAMMALS), *FAST, launcher=torchrun)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    client, run = _only_run(tmp)
    assert run.data.params["workers"] == "2"  # torchrun's world size
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(list((tmp / "ckpt").glob("*/mammal_epoch*.pth"))) == 20  # rank 0's, retained
    # one node: the ranks share the embedding, as with --workers 2
    assert _final_map(client, run) >= _final_map(*one_worker[1:]) - 0.03


def test_two_torchrun_nodes_keep_a_copy_each_and_merge_their_updates(tmp_path, one_worker):
    """Two torchrun agents on this machine, one rank each: nodes never share memory (their
    host id includes the node rank), so this is the multi-machine path for real."""
    port = free_port()
    procs = []
    for node in (0, 1):
        tmp = tmp_path / f"node{node}"
        tmp.mkdir()
        torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1",
                    "--node-rank", str(node), "--rdzv-backend", "static",
                    "--master-addr", "127.0.0.1", "--master-port", str(port)]
        # node 1 gets no dataset and an unusable store: only rank 0 may need them
        args = ["--epochs", "60", *FAST] if node == 0 else ["--epochs", "60", "--dataset", "/nonexistent.csv",
                                                           *FAST]
        procs.append(_train(tmp, *args, launcher=torchrun))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    client, run = _only_run(tmp_path / "node0")
    assert run.data.params["workers"] == "2"
    assert not (tmp_path / "node1" / "mlflow.db").exists() and not (tmp_path / "node1" / "ckpt").exists()
    assert _final_map(client, run) >= _final_map(*one_worker[1:]) - 0.05


def test_torchrun_world_size_and_workers_must_agree(tmp_path):
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    proc = _train(tmp_path, "--epochs", "3", "--workers", "3", *FAST, launcher=torchrun)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "differs from torchrun's world size 2" in out


def test_one_rank_shares_and_merges_its_own_copy(tmp_path):
    # a group of one in this process: the shared copy holds the start, a merge of one host
    # is start + its own delta, projected into the ball, and the segment is removed after
    init = (tmp_path / "rendezvous").as_uri()
    torch.distributed.init_process_group("gloo", init_method=init, rank=0, world_size=1)
    group = distributed.Group(0, 1)
    try:
        start = np.zeros((3, 2))
        emb = group.share(start, "test" + distributed.new_token())
        assert group.hosts == 1 and group.local == 1 and group.leader and emb.tolist() == start.tolist()
        name = group._shm.name
        emb[0] = [0.3, 0.4]
        emb[1] = [2.0, 0.0]  # outside the ball: projected back inside
        group.merge(emb, group.snapshot(np.zeros((3, 2))), "poincare")
        assert emb[0].tolist() == pytest.approx([0.3, 0.4])
        assert 0.99 < float((emb[1] ** 2).sum() ** 0.5) < 1.0
        assert emb[2].tolist() == [0.0, 0.0]
        assert group.total(2.5) == 2.5 and group.agree_stop(True) is True
        assert group.shard(np.arange(10)).tolist() == list(range(10))
        del emb
    finally:
        distributed.close(group)
    assert not Path("/dev/shm", name.lstrip("/")).exists()


@pytest.mark.parametrize(("cores", "expected"), [(2, 1), (64, None)])
def test_ranks_that_take_every_core_train_with_one_torch_thread(monkeypatch, cores, expected):
    # torch's intra-op pool in rank 0 could only take a core from the other rank (and its OpenMP
    # worker spins after each op): 1 thread while the 2 ranks fill the cores, torch's default
    # where cores are left over, and the caller's setting back afterwards
    from hype import processes
    from hype.config import TrainConfig
    from hype.data import load_edge_csv
    from hype.train import train

    monkeypatch.setattr(processes, "usable_cores", lambda: cores)
    before = torch.get_num_threads()
    seen = []

    class Record:
        def on_epoch_end(self, result, state):
            seen.append(torch.get_num_threads())

        def on_checkpoint(self, state):
            pass

    train(load_edge_csv(MAMMALS), TrainConfig(workers=2, epochs=2, burnin=0, eval_every=2),
          callbacks=Record(), progress=False)
    assert seen == [expected or before] * 2
    assert torch.get_num_threads() == before


def test_shards_cover_the_epoch_exactly_once():
    order = torch.randperm(1001).numpy()
    parts = [distributed.Group(r, 3).shard(order) for r in range(3)]
    assert sorted(x for p in parts for x in p.tolist()) == list(range(1001))


def test_workers_need_the_numba_backend():
    from hype.config import TrainConfig

    with pytest.raises(ValueError, match="several workers need the numba backend"):
        TrainConfig(workers=2, backend="torch")


def test_rank_0_does_not_wait_for_a_rank_that_died_while_starting(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(distributed.WorkerStartError, match="worker rank 1 exited with code 3"):
        distributed._wait_ready([dead], tmp_path)
    ready = subprocess.Popen([sys.executable, "-c",
                              f"import pathlib, time; pathlib.Path({str(tmp_path / 'ready.1')!r}).touch(); "
                              "time.sleep(30)"])
    try:
        distributed._wait_ready([ready], tmp_path)  # returns as soon as the rank says it is ready
        assert ready.poll() is None
    finally:
        ready.kill()
        ready.wait()
