"""MLproject and conda.yaml: consistent with the CLI and requirements.txt, and `mlflow run .`
really trains into the run it creates (--env-manager local: conda cannot be installed here), in
the store and experiment `make train` uses unless told otherwise; cleanup and evaluate record
what they did in the experiment they act on, and nothing stays in Default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.projects._project_spec import load_project
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.store import project_run

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_conda_yaml_pins_exactly_what_requirements_pins():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    deps = env["dependencies"]
    assert "python=3.11.7" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    required = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert _pins(pip) == required
    assert all(version for version in required.values())  # every one pinned


def test_entry_points_only_use_options_the_cli_has():
    project = load_project(str(ROOT))
    assert set(project._entry_points) == {"main", "cleanup", "evaluate"}
    for name, entry in project._entry_points.items():
        words = entry.command.split()
        if name == "main":  # train adopts MLFLOW_RUN_ID itself: the run is moved before it starts
            assert words[:3] == ["python", "-m", "tracker.store.project_run"], name
            words = ["python", "cli.py", *words[3:]]
        assert words[:2] == ["python", "cli.py"], name
        command = cli.commands[words[2]]
        options = {o for p in command.params for o in p.opts}
        used = {w.split("=")[0] for w in words if w.startswith("--")}
        assert used <= options, f"{name}: {sorted(used - options)} are not options of {words[2]}"
        # every parameter reaches the command line
        assert set(entry.parameters) == set(re.findall(r"{(\w+)}", entry.command)), name
    main = project._entry_points["main"].parameters
    for p in ("epochs", "dim", "lr", "negs", "batch_size", "keep_checkpoints", "patience",
              "dataset", "manifold"):
        assert p in main
    assert set(project._entry_points["cleanup"].parameters) == {"keep", "keep_best", "keep_every", "dry_run",
                                                                 "experiment"}


def test_runs_of_mlflow_run_go_where_train_puts_its_runs():
    """Given no experiment, `mlflow run` uses Default; hype moves the run to train's default
    experiment; from the project folder MLflow's own default store is already train's."""
    train = cli.commands["train"]
    (experiment,) = [p for p in train.params if p.name == "experiment"]
    assert project_run.DEFAULT_EXPERIMENT == experiment.default == "hype"
    assert project_run.destination("0", "hype") == "hype"  # Default: given no experiment
    assert project_run.destination("0", "mlproj") == "mlproj"
    assert project_run.destination("7", "hype") is None  # one named (--experiment-name): kept
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    code = "import mlflow; print(mlflow.get_tracking_uri())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == f"sqlite:///{layout.DEFAULT_DB}"  # `make train`'s store


def _moved_pair(client, *, names_back=True):
    """An original in Default tagged as moved, and its copy in hype (naming it back or not)."""
    exp = client.create_experiment("hype")
    old = client.create_run("0").info.run_id
    new = client.create_run(exp, tags={project_run.TAG_MOVED_FROM: old if names_back else "f" * 32})
    client.set_tag(old, project_run.TAG_MOVED_TO, new.info.run_id)
    return old, new.info.run_id


@pytest.mark.parametrize("case, kept", [("moved", False), ("forged", True), ("untagged", True),
                                        ("failed", False), ("named", True)])
def test_retire_deletes_only_an_original_that_hype_moved_or_failed(sqlite_tracking, case, kept):
    client = MlflowClient(sqlite_tracking.tracking_uri)
    if case in ("moved", "forged"):
        run_id, _ = _moved_pair(client, names_back=case == "moved")
    else:
        exp = "0" if case != "named" else client.create_experiment("mine")
        run_id = client.create_run(exp).info.run_id
        if case in ("failed", "named"):
            client.set_tag(run_id, project_run.TAG_ERROR, "Error: no such file")
    client.set_terminated(run_id, "FINISHED")  # as `mlflow run` ends it once the command exits
    said = project_run.retire(client, run_id, wait_s=5)
    assert (client.get_run(run_id).info.lifecycle_stage == "active") == kept, said
    assert said.startswith(f"run {run_id} kept: ") == kept


def test_retire_waits_for_mlflow_run_to_end_its_run(sqlite_tracking):
    """A deleted run cannot be written, and `mlflow run` always writes its run's status last:
    retire waits for it (and ends the run itself when `mlflow run` is gone)."""
    client = MlflowClient(sqlite_tracking.tracking_uri)
    old, _ = _moved_pair(client)
    started = time.monotonic()
    assert project_run.retire(client, old, wait_s=0.5, poll_s=0.05) == f"run {old} deleted"
    assert time.monotonic() - started >= 0.5
    run = client.get_run(old)
    assert (run.info.status, run.info.lifecycle_stage) == ("FAILED", "deleted")


def _mlflow_run(tmp_path, uri, *args, experiment: str | None = "mlproj"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    named = ["--experiment-name", experiment] if experiment else []
    cmd = [str(VENV_BIN / "mlflow"), "run", str(ROOT), "--env-manager", "local", *named, *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


def _train_tiny(tmp_path, uri, **kw):
    dataset = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    return _mlflow_run(tmp_path, uri, "-P", "epochs=4", "-P", "burnin=1", "-P", "eval_every=1",
                       "-P", "keep_checkpoints=2", "-P", f"dataset={dataset}",
                       "-P", f"checkpoint_dir={tmp_path / 'ckpt'}", **kw)


def _no_run_in_default(client, wait_s=60.0):
    """The runs `mlflow run` made in Default are retired once it has ended them (a detached
    process waits for that): wait for it, and say which are left."""
    deadline = time.monotonic() + wait_s
    while (left := client.search_runs(["0"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [(r.info.run_id, r.info.status, r.data.tags) for r in left]


@pytest.mark.slow
def test_mlflow_run_trains_into_its_own_run_then_cleanup_entry_point(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    _train_tiny(tmp_path, uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mlproj")
    (run,) = client.search_runs([exp.experiment_id])  # mlflow run's run, not a second one
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.tags[layout.TAG_MODEL_NAME] == "tree"
    assert run.data.params["epochs"] == "4" and run.data.params["dataset_edges"] == "21"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    checkpoints = [a.path for a in client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)]
    assert len(checkpoints) in (2, 3)  # the newest 2, and the best if it is older
    assert "hype_checkpoints/tree_epoch0004.pth" in checkpoints
    assert [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER)] == ["hype_model/tree.pth"]
    assert (tmp_path / "ckpt" / run_id / "tree.pth").is_file()

    # no -P experiment: the cleanup cleans the experiment `mlflow run` was given, not hype
    # keep_best=0: which epoch is the best depends on the recipe; only the newest is kept here
    done = _mlflow_run(tmp_path, uri, "-e", "cleanup", "-P", "keep=1", "-P", "keep_best=0",
                       "-P", "dry_run=true")
    assert "1 run: would delete " in done.stdout  # its own run is no target
    assert f"run {run_id} (experiment 'mlproj', FINISHED): model tree" in done.stdout
    assert len(client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)) == len(checkpoints)
    (record,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id != run_id]
    assert record.info.status == "FINISHED"
    assert record.data.tags["mlflow.project.entryPoint"] == "cleanup"
    assert record.data.metrics["checkpoints_to_delete"] == len(checkpoints) - 1  # a dry run's name
    assert "checkpoints_deleted" not in record.data.metrics
    assert client.get_experiment_by_name("hype") is None  # named: nothing moved


@pytest.mark.slow
def test_mlflow_run_without_experiment_records_where_make_train_does(sqlite_tracking, tmp_path):
    """No --experiment-name: main trains into experiment hype (artifacts ./mlartifacts/hype),
    cleanup with its default experiment cleans that run, evaluate logs mean rank and MAP, each
    in hype, and the runs `mlflow run` made in Default are gone."""
    uri = sqlite_tracking.tracking_uri
    client = MlflowClient(uri)
    done = _train_tiny(tmp_path, uri, experiment=None)
    hype = client.get_experiment_by_name("hype")
    assert hype is not None and hype.tags[layout.EXPERIMENT_KIND_TAG] == layout.EXPERIMENT_KIND
    assert hype.artifact_location == (tmp_path / "mlartifacts" / "hype").as_uri()  # as `make train`'s
    (run,) = client.search_runs([hype.experiment_id])
    run_id = run.info.run_id
    origin = run.data.tags[project_run.TAG_MOVED_FROM]
    assert f"Run (ID '{origin}') succeeded" in done.stderr  # the id `mlflow run` printed
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.tags["mlflow.source.type"] == "PROJECT"
    assert run.data.params["epochs"] == "4" and run.data.params["dataset_edges"] == "21"
    assert run.info.artifact_uri.startswith(hype.artifact_location)
    retained = [a.path for a in client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)]
    assert len(retained) in (2, 3)

    done = _mlflow_run(tmp_path, uri, "-e", "cleanup", "-P", "keep=1", "-P", "keep_best=0",
                       experiment=None)
    assert f"run {run_id} (experiment 'hype', FINISHED): model tree" in done.stdout
    assert "1 run: deleted " in done.stdout
    assert [a.path for a in client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)] == [
        "hype_checkpoints/tree_epoch0004.pth"]

    done = _mlflow_run(tmp_path, uri, "-e", "evaluate", "-P", f"run_id={run_id}",
                       "-P", f"dataset={tmp_path / 'tree_closure.csv'}", experiment=None)
    assert "mean rank " in done.stdout

    assert _no_run_in_default(client) == []
    records = {r.data.tags["mlflow.project.entryPoint"]: r for r in client.search_runs([hype.experiment_id])}
    assert set(records) == {"main", "cleanup", "evaluate"}
    cleanup, evaluate = records["cleanup"], records["evaluate"]
    assert cleanup.info.status == evaluate.info.status == "FINISHED"
    assert cleanup.data.metrics["checkpoints_deleted"] == len(retained) - 1
    assert cleanup.data.metrics["checkpoints_kept"] == 1 and cleanup.data.metrics["bytes_freed"] > 0
    assert cleanup.data.params["cleaned_experiment"] == "hype"
    final = client.get_run(run_id).data.metrics
    assert evaluate.data.metrics["mean_rank"] == pytest.approx(final["final_mean_rank"])
    assert evaluate.data.metrics["map"] == pytest.approx(final["final_map"])
    assert evaluate.data.params["checkpoint_run_id"] == run_id
    assert evaluate.data.params["dataset_edges"] == "21"
    for r in records.values():  # each original: deleted, and naming its copy
        origin = client.get_run(r.data.tags[project_run.TAG_MOVED_FROM])
        assert origin.info.experiment_id == "0" and origin.info.lifecycle_stage == "deleted"
        assert origin.data.tags[project_run.TAG_MOVED_TO] == r.info.run_id
    assert not (tmp_path / "mlruns").exists()  # Default's artifact folder: never made
