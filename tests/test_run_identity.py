"""Which run a training writes into: a FINISHED run is continued only when asked, past its stop,
with one final model; --epochs never goes below what a run already trained."""

from __future__ import annotations

import json

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout

ARGS = ["--dim", "2", "--burnin", "1", "--eval-every", "1", "--negs", "4", "--lr", "1.0", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _train(uri, tmp_path, *extra):
    data = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    r = invoke("train", "--dataset", data, "--tracking-uri", uri, "--checkpoint-dir", tmp_path / "ck",
               *ARGS, *extra)
    assert r.exit_code == 0, r.output
    (run_id,) = [p.name for p in (tmp_path / "ck").iterdir()]
    return run_id


def pyfunc_models(client, run_id):
    exp = client.get_run(run_id).info.experiment_id
    return client.search_logged_models(experiment_ids=[exp], filter_string=(
        f"source_run_id = '{run_id}' AND name = '{layout.PYFUNC_FOLDER}'"))


def test_a_finished_run_is_continued_only_when_asked_and_keeps_one_final_model(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "4", "--patience", "100")
    client = MlflowClient(uri)
    assert len(pyfunc_models(client, run_id)) == 1
    before = client.get_run(run_id).data.tags[layout.TAG_STOP_REASON]

    for extra, message in (((), "is FINISHED"), (("--epochs", "3"), "pass --epochs N with N > 4"),
                           (("--epochs", "4"), "pass --epochs N with N > 4")):
        r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", *extra)
        assert r.exit_code == 1 and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[layout.TAG_STOP_REASON] == before

    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "7")
    assert r.exit_code == 0, r.output
    assert f"Continuing FINISHED run {run_id} past its stop" in r.output
    run = client.get_run(run_id)
    assert run.data.tags[layout.TAG_STOP_REASON] == "finished: reached 7 epochs"
    assert max(m.step for m in client.get_metric_history(run_id, "loss")) == 7
    assert len(pyfunc_models(client, run_id)) == 1  # the old final model was replaced, not doubled
    assert [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER)] == ["hype_model/tree.pth"]


def test_an_early_stopped_run_goes_on_past_its_stop(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    # loss as max: the best is the first evaluation after burn-in; patience 2 stops at epoch 4
    run_id = _train(uri, tmp_path, "--epochs", "30", "--patience", "2", "--monitor", "loss", "--mode", "max",
                    "--no-pyfunc")
    client = MlflowClient(uri)
    assert client.get_run(run_id).data.tags[layout.TAG_STOP_REASON].startswith("stopped:")
    ran = max(m.step for m in client.get_metric_history(run_id, "loss"))
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "30")
    assert r.exit_code == 0, r.output
    after = max(m.step for m in client.get_metric_history(run_id, "loss"))
    assert after == ran + 2  # patience given back: two more evaluations, then the same stop rule


def test_resume_applies_records_and_prints_what_may_change(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "4", "--patience", "100", "--keep-checkpoints", "20",
                    "--no-pyfunc")
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "8",
               "--keep-checkpoints", "2", "--patience", "50", "--keep-best", "0")
    assert r.exit_code == 0, r.output
    for line in ("Resume changes keep_checkpoints 20 -> 2", "Resume changes patience 100 -> 50",
                 "Resume changes epochs 4 -> 8", "Resume changes keep_best 1 -> 0"):
        assert line in r.output
    client = MlflowClient(uri)
    tags = client.get_run(run_id).data.tags
    record = tags["hype.resume.1"]
    assert record.startswith("at epoch 4: ") and "keep_checkpoints 20 -> 2" in record
    assert tags[layout.TAG_RETAINED_EPOCHS] == "7,8"  # the new retention applied: newest 2, no best
    assert client.get_run(run_id).data.params["keep_checkpoints"] == "20"  # params stay as logged


def test_a_second_resume_keeps_what_the_first_changed(sqlite_tracking, tmp_path):
    """Params are immutable: each resume starts from the params as earlier resumes changed them
    (hype.resumed_params), so a resume without options keeps retention, epochs and lr."""
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "4", "--patience", "100", "--no-pyfunc")
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "8",
               "--keep-checkpoints", "2", "--keep-best", "0", "--lr", "0.25", "--store-every-checkpoint")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "10",
               "--store-every-checkpoint")
    assert r.exit_code == 0, r.output
    assert "Resume changes epochs 8 -> 10" in r.output and "(epoch 8/10)" in r.output
    assert "keep_checkpoints" not in r.output and "lr " not in r.output  # nothing reverted
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["hype.resume.2"] == "at epoch 8: epochs 8 -> 10"
    assert run.data.tags[layout.TAG_RETAINED_EPOCHS] == "9,10"  # still newest 2, no best
    assert json.loads(run.data.tags[layout.TAG_RESUMED_PARAMS]) == {
        "epochs": "10", "keep_checkpoints": "2", "keep_best": "0", "lr": "0.25"}
    listed = json.loads(invoke("checkpoints", run_id, "--tracking-uri", uri, "--json").output)
    assert listed[0]["policies"] == "newest 2"  # the listing reads the run as resumed
    lrs = {m.step: m.value for m in client.get_metric_history(run_id, "lr")}
    assert lrs[10] == lrs[6] != lrs[4]  # the second resume trained at the first one's lr
    # below what the run (as changed) has trained: refused, naming its epochs as changed
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "9")
    assert r.exit_code == 1 and "10" in r.output.strip().splitlines()[-1]
    # an edited record is refused in one line, and nothing is changed
    client.set_tag(run_id, layout.TAG_RESUMED_PARAMS, '{"dim": "5"}')
    before = client.get_run(run_id).data.tags
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "12")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "is not a JSON object of changeable params" in r.output
    assert client.get_run(run_id).data.tags == before
    for edited, message in (('{"patience": "abc"}', "its resume record (tag hype.resumed_params) "),
                            ('{"epochs": "2"}', "it is to train 2 epochs (its params and resume record) "
                                                "but has trained 10")):
        client.set_tag(run_id, layout.TAG_RESUMED_PARAMS, edited)
        client.set_terminated(run_id, "KILLED")  # as if killed: a FINISHED run is refused before
        before = client.get_run(run_id).data.tags
        r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet")
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert message in r.output, r.output
        assert client.get_run(run_id).data.tags == before


def test_resume_refuses_what_defines_the_run(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = _train(uri, tmp_path, "--epochs", "3", "--no-pyfunc")
    client = MlflowClient(uri)
    before = client.get_run(run_id).data.tags
    for extra, message in ((("--dim", "3"), "--dim 3: the run was made with 2"),
                           (("--manifold", "lorentz"), "--manifold lorentz: the run was made with poincare"),
                           (("--model-name", "other"), "--model-name other: the run was made with tree"),
                           (("--experiment", "elsewhere"),
                            "--experiment elsewhere: the run was made with hype")):
        r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "5", *extra)
        assert r.exit_code == 1 and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags == before
    # the same value as the run's is not a change
    r = invoke("train", "--resume", run_id, "--tracking-uri", uri, "--quiet", "--epochs", "5", "--dim", "2")
    assert r.exit_code == 0, r.output
