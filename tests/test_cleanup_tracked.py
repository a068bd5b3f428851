"""The tracking-store cleanup engine: pure decisions as tables, then runs made by the real trainer
on a real SQLite store under tmp_path."""

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
from tracker.cleanup.local import CleanupError
from tracker.policy.retention import NOT_STORED, CheckpointRecord
from tracker.store.errors import StorePermissionError
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training


def ck(epoch, model="m"):
    return f"{model}_epoch{epoch:04d}.pth"


def kept(plan):
    return [d.record.name for g in plan.groups for d in g.kept]


def deleted(plan):
    return [d.record.name for _, d in plan.deletions]


def reasons(plan):
    return {d.record.name: d.reason for g in plan.groups for d in g.decisions}


# --- deciding: pure ---------------------------------------------------------------------------


def test_same_rule_on_both_sides_best_kept():
    tracked = {ck(e): 100 for e in range(1, 6)}
    local = [CheckpointRecord(e, ck(e), 100) for e in range(1, 6)]
    d = ct.decide_run(tracked=tracked, local=local, keep=2, model="m", best_epoch=1,
                      best_label="best (map=0.9)", local_location="/run")
    assert kept(d.tracked) == kept(d.local) == [ck(1), ck(4), ck(5)]
    assert deleted(d.tracked) == deleted(d.local) == [ck(2), ck(3)]
    assert reasons(d.tracked)[ck(1)] == "best (map=0.9)"
    assert reasons(d.local)[ck(3)] == "older than the newest 2"


def test_local_only_checkpoint_is_kept_and_not_counted_among_the_newest():
    # epoch 6 was written but its upload never confirmed: the store's newest 2 are 4 and 5
    tracked = {ck(e): 100 for e in range(1, 6)}
    local = [CheckpointRecord(e, ck(e), 100) for e in range(1, 7)]
    d = ct.decide_run(tracked=tracked, local=local, keep=2, model="m", best_epoch=None,
                      local_location="/run")
    assert kept(d.tracked) == [ck(4), ck(5)]
    assert kept(d.local) == [ck(4), ck(5), ck(6)]
    assert reasons(d.local)[ck(6)] == NOT_STORED


def test_local_files_the_store_does_not_decide_on_are_skipped():
    tracked = {ck(1): 1, ck(2): 1, ck(3): 1}
    local = [CheckpointRecord(1, "m_epoch1.pth", 1),  # the store holds epoch 1 as m_epoch0001.pth
             CheckpointRecord(2, ck(2), 1)]
    d = ct.decide_run(tracked=tracked, local=local, keep=1, model="m", best_epoch=None,
                      local_location="/run")
    assert deleted(d.tracked) == [ck(1), ck(2)]
    assert deleted(d.local) == [ck(2)]
    assert [s.name for s in d.local.skipped] == ["m_epoch1.pth"]
    assert "under another name" in d.local.skipped[0].reason


def test_look_alikes_and_duplicates_in_the_store_are_never_deleted():
    tracked = {ck(1): 1, "m_epoch1.pth": 1, ck(2): 1, ck(3): 1, "notes.txt": 1, "m.pth": 1,
               "m_epoch4.pth.tmp": 1}
    d = ct.decide_run(tracked=tracked, keep=1, model="m", best_epoch=None)
    assert deleted(d.tracked) == [ck(2)]
    assert sorted(s.name for s in d.tracked.skipped) == sorted(
        [ck(1), "m_epoch1.pth", "notes.txt", "m.pth", "m_epoch4.pth.tmp"])
    assert d.local is None


def test_best_protects_every_model_when_the_run_names_none():
    tracked = {ck(e, m): 1 for e in range(1, 5) for m in ("a", "b")}
    d = ct.decide_run(tracked=tracked, keep=1, model=None, best_epoch=2)
    assert kept(d.tracked) == [ck(2, "a"), ck(4, "a"), ck(2, "b"), ck(4, "b")]
    d = ct.decide_run(tracked=tracked, keep=1, model="a", best_epoch=2)
    assert kept(d.tracked) == [ck(2, "a"), ck(4, "a"), ck(4, "b")]


def test_store_that_cannot_delete_keeps_tracked_copies_local_copies_go():
    tracked = {ck(e): 1 for e in range(1, 4)}
    local = [CheckpointRecord(e, ck(e), 1) for e in range(1, 4)]
    d = ct.decide_run(tracked=tracked, local=local, keep=1, model="m", best_epoch=None,
                      can_delete=False, local_location="/run")
    assert deleted(d.tracked) == []
    assert reasons(d.tracked)[ck(1)] == f"older than the newest 1; {ct.STORE_CANNOT_DELETE}"
    assert deleted(d.local) == [ck(1), ck(2)]
    assert deleted(d.retention) == [ck(1), ck(2)]


def test_local_copy_outlives_a_failed_tracked_deletion():
    tracked = {ck(e): 1 for e in range(1, 4)}
    local = [CheckpointRecord(e, ck(e), 1) for e in range(1, 4)]
    d = ct.decide_run(tracked=tracked, local=local, keep=1, model="m", best_epoch=None,
                      tracked_failed=[ck(1)], local_location="/run")
    assert deleted(d.local) == [ck(2)]
    assert reasons(d.local)[ck(1)] == ct.TRACKED_FAILED


# --- runs made by the real trainer ------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    return load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv", depth=2))


def train(uri, graph, tmp_path, *, epochs=6, experiment="t", interrupt_before_finish=False,
          monkeypatch=None, log_pyfunc=False):
    """A real run keeping every checkpoint; its best is epoch 3 (the first after burn-in, by
    monitoring a falling loss with mode max), so keep=2 leaves the best outside the newest 2."""
    config = TrainConfig(dim=2, epochs=epochs, burnin=2, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(model_name="tree", keep=None, checkpoint_root=tmp_path / "ckpt",
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
    return sorted(p.name for p in (tmp_path / "ckpt" / run_id).iterdir())


def clean(client, run_id, keep, *, dry_run=False, include_running=False):
    (sel,) = ct.select_runs(client, run_id=run_id)
    plan = ct.plan_run(client, sel, keep=keep, include_running=include_running)
    return ct.execute_run(plan, dry_run=dry_run)


def test_cleans_tracked_and_local_copies_keeps_best_and_final(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    client = ct.open_client(uri)
    before = tracked_names(client, run_id)
    assert before == [f"tree_epoch{e:04d}.pth" for e in range(1, 7)]

    dry = clean(client, run_id, keep=2, dry_run=True)
    assert tracked_names(client, run_id) == before  # a dry run deletes nothing
    assert [o.status for o in dry.tracked.outcomes] == ["would delete"] * 3

    report = clean(client, run_id, keep=2)
    survivors = ["tree_epoch0003.pth", "tree_epoch0005.pth", "tree_epoch0006.pth"]
    assert tracked_names(client, run_id) == survivors
    assert local_names(tmp_path, run_id) == sorted(survivors + ["tree.pth"])
    assert tracked_names(client, run_id, layout.FINAL_FOLDER) == ["tree.pth"]
    assert report.failed == 0
    assert [o.decision.record.name for o in report.tracked.deleted] == [
        o.decision.record.name for o in dry.tracked.outcomes]
    assert report.tracked.bytes_freed == dry.tracked.bytes_freed > 0
    text = ct.render_run(report)
    assert "best epoch 3" in text and "tree_epoch0003.pth: best (loss=" in text
    # a second cleanup finds nothing more to do
    assert clean(client, run_id, keep=2).tracked.outcomes == ()


def test_run_still_running_is_skipped_unless_asked(sqlite_tracking, tree, tmp_path, monkeypatch):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path, interrupt_before_finish=True, monkeypatch=monkeypatch)
    client = ct.open_client(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    before = tracked_names(client, run_id)
    report = clean(client, run_id, keep=1)
    assert report.tracked is None and "RUNNING" in report.plan.skip_reason
    assert tracked_names(client, run_id) == before
    assert "skipped, status RUNNING" in ct.render_run(report)
    report = clean(client, run_id, keep=1, include_running=True)
    assert tracked_names(client, run_id) == ["tree_epoch0003.pth", "tree_epoch0006.pth"]


def test_without_local_copies_only_the_store_is_cleaned(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    for p in (tmp_path / "ckpt" / run_id).iterdir():
        p.unlink()
    (tmp_path / "ckpt" / run_id).rmdir()
    report = clean(ct.open_client(uri), run_id, keep=1)
    assert report.local is None and len(report.tracked.deleted) == 4
    assert "no local copies" in ct.render_run(report)


def test_failed_tracked_deletion_keeps_its_local_copy_and_others_go_ahead(
        sqlite_tracking, tree, tmp_path, monkeypatch):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path)
    real_delete = TrackedCheckpoints.delete

    def refuse_one(self, name):
        if name == "tree_epoch0002.pth":
            raise StorePermissionError(f"delete {name!r}: permission denied (403)", status=403)
        return real_delete(self, name)

    monkeypatch.setattr(TrackedCheckpoints, "delete", refuse_one)
    report = clean(ct.open_client(uri), run_id, keep=1)
    assert report.failed == 1
    assert "permission denied" in report.tracked.failed[0].error
    client = MlflowClient(uri)
    assert tracked_names(client, run_id) == ["tree_epoch0002.pth", "tree_epoch0003.pth",
                                             "tree_epoch0006.pth"]
    assert "tree_epoch0002.pth" in local_names(tmp_path, run_id)
    assert "tree_epoch0004.pth" not in local_names(tmp_path, run_id)


def test_store_that_cannot_delete_warns_and_cleans_local_copies(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    _artifact_repository_registry.register("nodelete", NoDeleteRepository)
    try:
        client = MlflowClient(uri)
        client.create_experiment("nodelete", artifact_location=f"nodelete:{tmp_path / 'store'}")
        run_id = train(uri, tree, tmp_path, experiment="nodelete")
        report = clean(ct.open_client(uri), run_id, keep=2)
        assert any("cannot delete" in w for w in report.plan.warnings)
        assert report.failed == 0 and report.tracked.outcomes == ()
        assert len(tracked_names(client, run_id)) == 6  # left in place, and said so
        assert local_names(tmp_path, run_id) == ["tree.pth", "tree_epoch0003.pth",
                                                 "tree_epoch0005.pth", "tree_epoch0006.pth"]
        assert "WARNING: the artifact store" in ct.render_run(report)
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
    assert report.failed == 0 and report.tracked.plan.location.startswith("mlflow-artifacts:")
    survivors = ["tree_epoch0003.pth", "tree_epoch0005.pth", "tree_epoch0006.pth"]
    assert tracked_names(client, run_id) == survivors
    on_server = sorted(p.name for p in mlflow_server_proxied.artifacts_dir.rglob("tree_epoch*.pth")
                       if run_id in str(p))
    assert on_server == survivors  # gone from the server's disk, not only from the listing
    assert local_names(tmp_path, run_id) == sorted(survivors + ["tree.pth"])
