"""Tracked training end to end against real stores: retention, final model, early stopping, resume."""

from __future__ import annotations

import json
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints.files import load
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training


def _names(client, run_id, folder):
    return sorted(a.path.split("/")[-1] for a in client.list_artifacts(run_id, folder))


@pytest.fixture
def tree(tmp_path):
    return load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv"))


def _train(uri, graph, tmp_path, *, epochs=25, keep=20, experiment="t", **kw):
    config = TrainConfig(dim=3, epochs=epochs, burnin=2, eval_every=1, negs=5, lr=1.0)
    tconfig = TrackerConfig(store_every=True, model_name="tree", keep=keep, checkpoint_root=tmp_path / "ckpt",
                            log_pyfunc=False, **kw)
    return run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment=experiment,
                        progress=False)


def test_sqlite_run_keeps_newest_20_of_25_on_both_sides(sqlite_tracking, tree, tmp_path):
    # patience high enough that the run does not stop; best = newest (loss keeps improving)
    out = _train(sqlite_tracking.tracking_uri, tree, tmp_path, monitor="loss", patience=100)
    client = MlflowClient(sqlite_tracking.tracking_uri)
    expected = [f"tree_epoch{e:04d}.pth" for e in range(6, 26)]
    assert _names(client, out.run_id, layout.CHECKPOINT_FOLDER) == expected
    local = sorted(p.name for p in (tmp_path / "ckpt" / out.run_id).glob("*.pth"))
    assert local == sorted(expected + ["tree.pth"])
    assert _names(client, out.run_id, layout.FINAL_FOLDER) == ["tree.pth"]
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[layout.TAG_RETAINED] == "20"
    for key in ("dataset_sha256", "dataset_nodes", "dataset_edges", "dim", "lr", "negs", "keep_checkpoints"):
        assert key in run.data.params
    steps = [m.step for m in client.get_metric_history(out.run_id, "loss")]
    assert steps == list(range(1, 26))
    # each retained checkpoint has what resume needs, and loads with weights_only
    ckpt = load(tmp_path / "ckpt" / out.run_id / "tree_epoch0025.pth")
    assert {"embeddings", "epoch", "config", "names", "optimizer", "rng"} <= set(ckpt)
    assert ckpt["epoch"] == 25


def test_best_checkpoint_is_kept_outside_the_newest_n(sqlite_tracking, tree, tmp_path):
    # mean_rank is minimised; with keep=2 the best epoch usually falls outside the newest 2
    out = _train(sqlite_tracking.tracking_uri, tree, tmp_path, epochs=12, keep=2, monitor="loss",
                 mode="max", patience=100)  # "max" of a falling loss: the best is the first counted
    client = MlflowClient(sqlite_tracking.tracking_uri)
    kept = _names(client, out.run_id, layout.CHECKPOINT_FOLDER)
    assert out.best_epoch == 3  # first epoch after burn-in (burnin=2)
    assert kept == ["tree_epoch0003.pth", "tree_epoch0011.pth", "tree_epoch0012.pth"]
    final = load(tmp_path / "ckpt" / out.run_id / "tree.pth")
    assert final["epoch"] == 3  # the final model holds the best weights
    assert client.get_run(out.run_id).data.tags[layout.TAG_FINAL_EPOCH] == "3"


def test_proxied_server_deletes_through_the_artifact_api(mlflow_server_proxied, tree, tmp_path):
    out = _train(mlflow_server_proxied.url, tree, tmp_path, epochs=8, keep=3, experiment="proxied",
                 monitor="loss", patience=100)
    url = (f"{mlflow_server_proxied.url}/api/2.0/mlflow/artifacts/list?"
           f"run_id={out.run_id}&path={layout.CHECKPOINT_FOLDER}")
    with urllib.request.urlopen(url) as resp:
        listed = sorted(f["path"].split("/")[-1] for f in json.load(resp).get("files", []))
    assert listed == [f"tree_epoch{e:04d}.pth" for e in (6, 7, 8)]
    on_server = sorted(p.name for p in mlflow_server_proxied.artifacts_dir.rglob("tree_epoch*.pth")
                       if out.run_id in p.parts)  # the server is shared with other tests
    assert on_server == listed  # gone from the server's disk too, not just hidden


def test_a_delete_the_store_did_not_carry_out_is_caught_by_the_next_listing(sqlite_tracking, tree,
                                                                            tmp_path, monkeypatch):
    """Deletes are confirmed by the listing of the next upload; one still listed is redone."""
    from tracker.checkpoints.tracked import TrackedCheckpoints

    real_delete = TrackedCheckpoints._delete
    skipped = []

    def flaky_delete(self, name):  # the store acknowledges the first delete but keeps the file
        if not skipped:
            skipped.append(name)
            return None
        return real_delete(self, name)

    monkeypatch.setattr(TrackedCheckpoints, "_delete", flaky_delete)
    out = _train(sqlite_tracking.tracking_uri, tree, tmp_path, epochs=6, keep=2, monitor="loss",
                 patience=100)
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert skipped == ["tree_epoch0001.pth"]
    assert _names(client, out.run_id, layout.CHECKPOINT_FOLDER) == ["tree_epoch0005.pth",
                                                                     "tree_epoch0006.pth"]
