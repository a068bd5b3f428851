"""Tracking-store cleanup of runs made by the real trainer, on a real SQLite store (and a real
server) under tmp_path. The decisions themselves are tested as tables in test_policies.py."""

from __future__ import annotations

import pytest
from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.repos import NoDeleteRepository
from tracker import layout
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.cleanup import runs as ct
from tracker.cleanup import targets
from tracker.cleanup.render import render_result
from tracker.cleanup.runs import CleanupError
from tracker.policy.retention import Retention
from tracker.store.errors import StoreError, StorePermissionError
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

# --- runs made by the real trainer ------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    return load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv", depth=2))


def train(uri, graph, tmp_path, *, epochs=6, experiment="t", interrupt_before_finish=False,
          monkeypatch=None, log_pyfunc=False):
    """A real run keeping every checkpoint; its best is epoch 3 (the first after burn-in, by
    monitoring a falling loss with mode max), so keep=2 leaves the best outside the newest 2."""
    config = TrainConfig(dim=2, epochs=epochs, burnin=2, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(store_every=True, model_name="tree", keep=None, checkpoint_root=tmp_path / "ckpt",
                            log_pyfunc=log_pyfunc, monitor="loss", mode="max", patience=100)
    if interrupt_before_finish:
        # The process dies after its last checkpoint, before closing the run: it stays RUNNING,
        # exactly as a run in progress looks from outside.
        class Died(Exception):
            pass

        def die(*a, **k):
            raise Died()

        monkeypatch.setattr("tracker.training.session.finish", die)
        # a dead process marks nothing
        monkeypatch.setattr("tracker.training.session._mark", lambda *a: False)
        with pytest.raises(Died):
            run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment=experiment,
                         progress=False)
        monkeypatch.undo()
        client = MlflowClient(uri)
        return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  order_by=["attributes.start_time DESC"])[0].info.run_id
    out = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment=experiment,
                       progress=False)
    assert out.best_epoch == 3
    return out.run_id


def tracked_names(client, run_id, folder=layout.CHECKPOINT_FOLDER):
    return sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder))


def local_names(tmp_path, run_id):
    return sorted(p.name for p in (tmp_path / "ckpt" / run_id).iterdir() if "manifest" not in p.name)


def clean(client, run_id, keep, *, dry_run=False, include_running=False):
    (sel,) = ct.select_runs(client, run_id=run_id)
    target = targets.plan_run(client, sel, retention=Retention(keep), include_running=include_running)
    return targets.execute(target, dry_run=dry_run)


def statuses(result):
    return [d.status for d in result.applied.deletions]


def deleted_names(result):
    return [d.item.name for d in result.applied.deletions if d.status == "deleted"]


def test_cleans_tracked_and_local_copies_keeps_best_and_final(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    client = ct.open_client(uri)
    before = tracked_names(client, run_id)
    assert before == [f"tree_epoch{e:04d}.pth" for e in range(1, 7)]

    dry = clean(client, run_id, keep=2, dry_run=True)
    assert tracked_names(client, run_id) == before  # a dry run deletes nothing
    assert statuses(dry) == ["would delete"] * 3

    report = clean(client, run_id, keep=2)
    survivors = ["tree_epoch0003.pth", "tree_epoch0005.pth", "tree_epoch0006.pth"]
    assert tracked_names(client, run_id) == survivors
    assert local_names(tmp_path, run_id) == sorted(survivors + ["tree.pth"])
    assert tracked_names(client, run_id, layout.FINAL_FOLDER) == ["tree.pth"]
    assert report.ok
    assert deleted_names(report) == [d.item.name for d in dry.applied.deletions]
    assert sum(d.freed for d in report.applied.deletions) == sum(d.freed for d in dry.applied.deletions) > 0
    text = render_result(report)
    assert "best epoch 3" in text and "tree_epoch0003.pth: best (loss=" in text
    # the run's tags say what it holds now (bookkeeping after a cleanup, not only after training)
    tags = client.get_run(run_id).data.tags
    assert tags[layout.TAG_RETAINED] == "3" and tags[layout.TAG_RETAINED_EPOCHS] == "3,5,6"
    # a second cleanup finds nothing more to do
    assert clean(client, run_id, keep=2).applied.deletions == ()


def test_run_still_running_is_skipped_unless_asked(sqlite_tracking, tree, tmp_path, monkeypatch):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path, interrupt_before_finish=True, monkeypatch=monkeypatch)
    client = ct.open_client(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    before = tracked_names(client, run_id)
    report = clean(client, run_id, keep=1)
    assert report.applied is None and "RUNNING" in report.target.skip
    assert tracked_names(client, run_id) == before
    assert "skipped, status RUNNING" in render_result(report)
    report = clean(client, run_id, keep=1, include_running=True)
    assert tracked_names(client, run_id) == ["tree_epoch0003.pth", "tree_epoch0006.pth"]


def test_without_local_copies_only_the_store_is_cleaned(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    for p in (tmp_path / "ckpt" / run_id).iterdir():
        p.unlink()
    (tmp_path / "ckpt" / run_id).rmdir()
    report = clean(ct.open_client(uri), run_id, keep=1)
    assert report.target.local_location is None and len(deleted_names(report)) == 4
    assert "no local copies" in render_result(report)


def test_failed_tracked_deletion_keeps_its_local_copy_and_others_go_ahead(
        sqlite_tracking, tree, tmp_path, monkeypatch):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    real_delete = TrackedCheckpoints.delete

    def refuse_one(self, name, **kw):
        if name == "tree_epoch0002.pth":
            raise StoreError(f"delete {name!r} failed: the store answered 500")
        return real_delete(self, name, **kw)

    monkeypatch.setattr(TrackedCheckpoints, "delete", refuse_one)
    report = clean(ct.open_client(uri), run_id, keep=1)
    assert len(report.failed) == 1 and not report.ok
    assert "500" in report.failed[0].error
    client = MlflowClient(uri)
    assert tracked_names(client, run_id) == ["tree_epoch0002.pth", "tree_epoch0003.pth",
                                             "tree_epoch0006.pth"]
    assert "tree_epoch0002.pth" in local_names(tmp_path, run_id)
    assert "tree_epoch0004.pth" not in local_names(tmp_path, run_id)


def test_permission_refusal_stops_the_run_and_deletes_nothing_of_it(sqlite_tracking, tree, tmp_path,
                                                                     monkeypatch):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)

    def refuse(self, name, **kw):
        raise StorePermissionError(f"delete {name!r}: permission denied (403)", status=403)

    monkeypatch.setattr(TrackedCheckpoints, "delete", refuse)
    report = clean(ct.open_client(uri), run_id, keep=1)
    assert not report.ok and "MANAGE" in report.problems[0]
    assert len(tracked_names(MlflowClient(uri), run_id)) == 6
    assert len(local_names(tmp_path, run_id)) == 7  # 6 checkpoints and the final model


def test_store_that_cannot_delete_warns_and_cleans_local_copies(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    _artifact_repository_registry.register("nodelete", NoDeleteRepository)
    try:
        client = MlflowClient(uri)
        client.create_experiment("nodelete", artifact_location=f"nodelete:{tmp_path / 'store'}")
        run_id = train(uri, tree, tmp_path, experiment="nodelete")
        report = clean(ct.open_client(uri), run_id, keep=2)
        assert report.ok
        assert {d.tracked for d in report.applied.deletions} == {"kept: the store cannot delete"}
        assert len(tracked_names(client, run_id)) == 6  # left in place, and said so
        assert local_names(tmp_path, run_id) == ["tree.pth", "tree_epoch0003.pth",
                                                 "tree_epoch0005.pth", "tree_epoch0006.pth"]
    finally:
        _artifact_repository_registry._registry.pop("nodelete", None)


def test_selection_errors_name_what_exists(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    train(uri, tree, tmp_path, experiment="mammals")
    client = ct.open_client(uri)
    with pytest.raises(CleanupError, match="no run with id 'nope'"):
        ct.select_runs(client, run_id="nope")
    with pytest.raises(CleanupError, match=r"no experiment named 'other'.*'mammals'"):
        ct.select_runs(client, experiment="other")
    assert len(ct.select_runs(client, experiment="mammals")) == 1
    assert len(ct.select_runs(client, all_experiments=True)) == 1


def test_open_client_never_creates_a_database(tmp_path):
    with pytest.raises(CleanupError, match="no tracking database"):
        ct.open_client(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


def test_through_a_tracking_server_with_proxied_artifacts(mlflow_server_proxied, tree, tmp_path):
    uri = mlflow_server_proxied.url
    run_id = train(uri, tree, tmp_path, experiment="cleanup-proxied")
    client = ct.open_client(uri)
    report = clean(client, run_id, keep=2)
    assert report.ok and report.target.tracked_location.startswith("mlflow-artifacts:")
    survivors = ["tree_epoch0003.pth", "tree_epoch0005.pth", "tree_epoch0006.pth"]
    assert tracked_names(client, run_id) == survivors
    on_server = sorted(p.name for p in mlflow_server_proxied.artifacts_dir.rglob("tree_epoch*.pth")
                       if run_id in str(p))
    assert on_server == survivors  # gone from the server's disk, not only from the listing
    assert local_names(tmp_path, run_id) == sorted(survivors + ["tree.pth"])
