"""The disk-space guard: a pure estimate, and a run that refuses to start (unless forced)."""

import pytest
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tracker.policy import disk as diskguard
from tracker.store.errors import TrackingError
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

MB = 2**20


@pytest.mark.parametrize("size, keep, epochs, free, margin, ok, retained", [
    (1 * MB, 20, 300, 100 * MB, 10 * MB, True, 22 * MB),  # 22 MB fits in 100 MB with 10 to spare
    (1 * MB, 20, 300, 30 * MB, 10 * MB, False, 22 * MB),  # 30 - 22 = 8 < 10 margin
    (1 * MB, 1, 300, 13 * MB, 10 * MB, True, 3 * MB),  # keep=1: newest + best + final
    (1 * MB, None, 300, 200 * MB, 10 * MB, False, 301 * MB),  # keep all: every epoch + final
    (1 * MB, None, 10, 200 * MB, 10 * MB, True, 11 * MB),
])
def test_estimate_table(size, keep, epochs, free, margin, ok, retained):
    est = diskguard.estimate(size, keep=keep, epochs=epochs, free=free, margin=margin)
    assert (est.ok, est.retained_bytes_max) == (ok, retained)
    if not ok:
        assert "--force" in est.message and "not enough disk" in est.message


def test_held_checkpoints_count_as_already_paid_for():
    est = diskguard.estimate(MB, keep=20, epochs=300, free=15 * MB, margin=0, held_bytes=10 * MB)
    assert est.ok  # 22 MB needed, 10 MB of it already on disk


def _run(uri, tmp_path, **kw):
    graph = load_edge_csv(write_tree_closure(tmp_path / "t_closure.csv", depth=2))
    return run_training(uri=uri, graph=graph, config=TrainConfig(dim=2, epochs=3, burnin=1, negs=3),
                        tconfig=TrackerConfig(store_every=True,
                                              model_name="t", checkpoint_root=tmp_path / "ckpt",
                                              log_pyfunc=False, disk_margin=MB, **kw),
                        experiment="disk", progress=False)


def test_run_refuses_to_start_when_checkpoints_would_not_fit(sqlite_tracking, tmp_path, monkeypatch):
    monkeypatch.setattr(diskguard, "free_bytes", lambda path: MB + 1000)  # a nearly full disk
    with pytest.raises(TrackingError, match="not enough disk for the checkpoints"):
        _run(sqlite_tracking.tracking_uri, tmp_path)
    client = MlflowClient(sqlite_tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("disk").experiment_id])
    assert run.info.status == "FAILED"
    assert int(run.data.params["checkpoint_bytes"]) > 0
    assert int(run.data.params["retained_bytes_max"]) == 22 * int(run.data.params["checkpoint_bytes"])
    assert not list((tmp_path / "ckpt").rglob("*.pth"))  # nothing trained, nothing written


def test_force_starts_anyway(sqlite_tracking, tmp_path, monkeypatch):
    monkeypatch.setattr(diskguard, "free_bytes", lambda path: MB + 1000)
    out = _run(sqlite_tracking.tracking_uri, tmp_path, force=True)
    assert out.epochs_run == 3
