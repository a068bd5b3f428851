"""Each retained checkpoint is a LoggedModel (step, metrics by model_id, best marked, listed in the
run's outputs); retention, cleanup and resume keep the models equal to the retained checkpoints;
`cli.py checkpoints` shows them. Real SQLite stores and a real `mlflow server`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints import models as ckmodels

ARGS = ["--dim", "2", "--burnin", "1", "--eval-every", "2", "--negs", "4", "--lr", "1.0", "--quiet",
        "--no-pyfunc", "--patience", "100"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _train(uri, tmp_path, *extra):
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    before = set((tmp_path / "ck").iterdir()) if (tmp_path / "ck").exists() else set()
    r = invoke("train", "--dataset", data, "--tracking-uri", uri, "--checkpoint-dir", tmp_path / "ck",
               *ARGS, *extra)
    assert r.exit_code == 0, r.output
    (run_dir,) = set((tmp_path / "ck").iterdir()) - before
    return run_dir.name


def _models(client, run_id) -> dict[int, object]:
    exp = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([exp], filter_string=(
        f"source_run_id = '{run_id}' AND tags.`{ckmodels.KIND_TAG}` = '{ckmodels.KIND}'"))
    return {int(m.tags[ckmodels.EPOCH_TAG]): m for m in found}


def _retained(client, run_id) -> list[int]:
    return sorted(int(e) for e in client.get_run(run_id).data.tags[layout.TAG_RETAINED_EPOCHS].split(","))


def test_one_model_per_retained_checkpoint_with_its_metrics(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "8", "--keep-checkpoints", "3", "--keep-every", "4")
    client = MlflowClient(uri)
    models = _models(client, run_id)
    assert sorted(models) == _retained(client, run_id) == [4, 6, 7, 8]
    best = int(client.get_run(run_id).data.tags[layout.TAG_BEST_EPOCH])
    for epoch, m in models.items():
        assert str(m.status) == "READY" and m.name == f"tree_epoch{epoch:04d}"
        assert m.tags[ckmodels.ARTIFACT_TAG] == f"runs:/{run_id}/hype_checkpoints/tree_epoch{epoch:04d}.pth"
        assert m.tags[ckmodels.BEST_TAG] == ("true" if epoch == best else "false")
        assert int(m.tags[ckmodels.SIZE_TAG]) > 1000
        metrics = {x.key: (x.step, x.value) for x in m.metrics}
        assert metrics["loss"][0] == epoch
        assert ("map" in metrics) == (epoch % 2 == 0)  # evaluated every 2 epochs
    outputs = {o.model_id: o.step for o in client.get_run(run_id).outputs.model_outputs}
    assert {m.model_id: e for e, m in models.items()}.items() <= outputs.items()
    # best first, as the UI's Models table sorts by a metric column
    exp = client.get_run(run_id).info.experiment_id
    ranked = client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}'",
                                         order_by=[{"field_name": "metrics.map", "ascending": False}])
    assert ranked[0].model_id == models[best].model_id


def test_cleanup_deletes_the_models_of_what_it_deletes_and_checkpoints_lists_the_rest(sqlite_tracking,
                                                                                     tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "6", "--keep-checkpoints", "4", "--no-keep-best")
    client = MlflowClient(uri)
    gone = _models(client, run_id)[3].model_id
    r = invoke("cleanup", "--run-id", run_id, "--keep", "2", "--keep-best", "0", "--tracking-uri", uri)
    assert r.exit_code == 0, r.output
    assert sorted(_models(client, run_id)) == _retained(client, run_id) == [5, 6]

    r = invoke("checkpoints", run_id, "--tracking-uri", uri, "--json")
    assert r.exit_code == 0, r.output
    (run,) = json.loads(r.output)
    rows = {c["epoch"]: c for c in run["checkpoints"]}
    assert sorted(rows) == [5, 6]
    assert rows[6]["kept_by"] == ["newest 4"]  # the run's own rules (it was trained with --keep 4)
    assert rows[5]["where"] == "local + tracked" and rows[5]["copies"] == "agree"
    assert rows[5]["uri"] == f"models:/{_models(client, run_id)[5].model_id}"
    assert rows[6]["loss"] is not None and rows[6]["map"] is not None
    text = invoke("checkpoints", "--experiment", "hype", "--tracking-uri", uri)
    assert text.exit_code == 0 and f"run {run_id}" in text.output and "newest 4" in text.output
    assert gone not in text.output and rows[5]["uri"] in text.output


def test_resume_makes_the_models_match_the_checkpoints(sqlite_tracking, tmp_path):
    """A kill between a checkpoint's deletion and its model's, or before a model was created,
    leaves them apart: resume deletes the stray model and creates the missing one."""
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "3", "--keep-checkpoints", "2", "--no-keep-best")
    client = MlflowClient(uri)
    exp = client.get_run(run_id).info.experiment_id
    stray = client.create_logged_model(exp, name="tree_epoch0001", source_run_id=run_id,
                                       tags={ckmodels.KIND_TAG: ckmodels.KIND, ckmodels.EPOCH_TAG: "1"})
    client.delete_logged_model(_models(client, run_id)[3].model_id)
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "4")
    assert r.exit_code == 0, r.output
    assert "Checkpoint models: deleted the model of epoch 1 (its checkpoint is gone)" in r.output
    assert "Checkpoint models: created the model of tree_epoch0003.pth" in r.output
    assert sorted(_models(client, run_id)) == _retained(client, run_id) == [3, 4]
    assert stray.model_id not in {m.model_id for m in _models(client, run_id).values()}


def test_models_through_a_tracking_server(mlflow_server_proxied, tmp_path):
    uri = mlflow_server_proxied.url
    run_id = _train(uri, tmp_path, "--epochs", "4", "--keep-checkpoints", "2", "--no-keep-best",
                    "--experiment", "ckpt-models")
    client = MlflowClient(uri)
    assert sorted(_models(client, run_id)) == _retained(client, run_id) == [3, 4]
    r = invoke("cleanup", "--run-id", run_id, "--keep", "1", "--keep-best", "0", "--tracking-uri", uri)
    assert r.exit_code == 0, r.output
    assert sorted(_models(client, run_id)) == [4]


def test_any_retained_checkpoint_by_uri_or_epoch(sqlite_tracking, tmp_path):
    """evaluate and export take models:/<id>, runs:/..., or --run-id R --epoch E; a deleted one
    is one line that lists the retained epochs. No file is downloaded by hand."""
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "4", "--keep-checkpoints", "2", "--no-keep-best")
    client = MlflowClient(uri)
    model_id = _models(client, run_id)[3].model_id
    local = tmp_path / "ck" / run_id / "tree_epoch0003.pth"
    data = tmp_path / "tree_closure.csv"
    expected = json.loads(invoke("evaluate", local, "--dataset", data, "--json").output)
    for source in (["--run-id", run_id, "--epoch", "3"], [f"models:/{model_id}"],
                   [f"runs:/{run_id}/hype_checkpoints/tree_epoch0003.pth"]):
        r = invoke("evaluate", *source, "--tracking-uri", uri, "--dataset", data, "--json")
        assert r.exit_code == 0, r.output
        got = json.loads(r.output)
        assert (got["epoch"], got["map"], got["mean_rank"]) == (3, expected["map"], expected["mean_rank"])
    r = invoke("export", f"models:/{model_id}", "--tracking-uri", uri, "-o", tmp_path / "a.tsv")
    assert r.exit_code == 0, r.output
    assert invoke("export", local, "-o", tmp_path / "b.tsv").exit_code == 0
    assert (tmp_path / "a.tsv").read_text() == (tmp_path / "b.tsv").read_text()

    r = invoke("evaluate", "--run-id", run_id, "--epoch", "1", "--tracking-uri", uri)
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == (
        f"Error: run {run_id} holds no hype_checkpoints/tree_epoch0001.pth (deleted by retention, or never "
        "saved); retained epochs: 3, 4")
    gone = _models(client, run_id)[4].model_id
    client.delete_logged_model(gone)
    r = invoke("export", f"models:/{gone}", "--tracking-uri", uri, "-o", tmp_path / "c.tsv")
    assert r.exit_code == 1 and f"no model '{gone}' in this tracking store" in r.output
    assert not (tmp_path / "c.tsv").exists()


def test_a_model_left_pending_by_a_kill_is_made_again_with_its_epochs_metrics(sqlite_tracking, tmp_path):
    """Killed with epoch 3's checkpoint in the store but its model still PENDING (its metrics
    linked to it): resume replaces that model, linked to the epoch's metrics from the store."""
    import os
    import subprocess
    import sys

    from tracker.layout import PROJECT_ROOT

    uri = sqlite_tracking.tracking_uri
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    env = {**os.environ, "HYPE_FAULT": "upload:3"}
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "train", "--dataset", str(data),
                           "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ck"), "--epochs", "6",
                           "--eval-every", "1", *ARGS[:4], *ARGS[6:]], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "ck").iterdir()
    client = MlflowClient(uri)
    assert str(_models(client, run_dir.name)[3].status) == "PENDING"
    r = invoke("train", "--resume", run_dir.name, "--tracking-uri", uri, "--quiet")
    assert r.exit_code == 0, r.output
    model = _models(client, run_dir.name)[3]
    assert str(model.status) == "READY"
    linked = {m.key: m.value for m in model.metrics}
    assert {"loss", "map", "mean_rank"} <= set(linked)
    history = {m.step: m.value for m in client.get_metric_history(run_dir.name, "map")}
    assert linked["map"] == history[3]


def test_earlier_bests_are_unmarked_once_at_the_end_not_each_time_the_best_moves(sqlite_tracking, tmp_path,
                                                                              monkeypatch):
    """A new best costs no request while training (its model is created marked); the run's end
    leaves the mark on the best's model alone; a resume clears what a kill left marked."""
    uri = sqlite_tracking.tracking_uri
    calls = []
    real = MlflowClient.set_logged_model_tags
    monkeypatch.setattr(MlflowClient, "set_logged_model_tags",
                        lambda self, model_id, tags: calls.append(tags) or real(self, model_id, tags))
    # monitor loss: a new best nearly every epoch; keep 4, so several earlier bests are still listed
    run_id = _train(uri, tmp_path, "--epochs", "8", "--keep-checkpoints", "4", "--monitor", "loss",
                    "--mode", "min")
    client = MlflowClient(uri)
    models = _models(client, run_id)
    best = int(client.get_run(run_id).data.tags[layout.TAG_BEST_EPOCH])
    assert {e for e, m in models.items() if m.tags[ckmodels.BEST_TAG] == "true"} == {best}
    unmarked = [e for e, m in models.items() if m.tags[ckmodels.BEST_TAG] == "false"
                and "Was the best checkpoint" in m.tags.get(ckmodels.NOTE_TAG, "")]
    assert unmarked and len(calls) == len(unmarked) <= 4  # only those still listed at the end, once

    # A kill leaves earlier bests marked (as while training): the resume's sync clears them.
    for e in unmarked:
        client.set_logged_model_tags(models[e].model_id, {ckmodels.BEST_TAG: "true"})
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "9")
    assert r.exit_code == 0, r.output
    assert f"Checkpoint models: unmarked {len(unmarked)} earlier best(s)" in r.output
    best = int(client.get_run(run_id).data.tags[layout.TAG_BEST_EPOCH])
    marked = {e for e, m in _models(client, run_id).items() if m.tags[ckmodels.BEST_TAG] == "true"}
    assert marked == {best}
