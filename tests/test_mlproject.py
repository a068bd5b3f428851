"""MLproject and conda.yaml: consistent with the CLI and requirements.txt, and `mlflow run .`
really trains into the run it creates (--env-manager local: conda cannot be installed here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.projects._project_spec import load_project
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure
from tracker import layout

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


def _mlflow_run(tmp_path, uri, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    cmd = [str(VENV_BIN / "mlflow"), "run", str(ROOT), "--env-manager", "local",
           "--experiment-name", "mlproj", *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.slow
def test_mlflow_run_trains_into_its_own_run_then_cleanup_entry_point(sqlite_tracking, tmp_path):
    uri = sqlite_tracking.tracking_uri
    dataset = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    _mlflow_run(tmp_path, uri, "-P", "epochs=4", "-P", "burnin=1", "-P", "eval_every=1",
                "-P", "keep_checkpoints=2", "-P", f"dataset={dataset}",
                "-P", f"checkpoint_dir={tmp_path / 'ckpt'}")
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

    done = _mlflow_run(tmp_path, uri, "-e", "cleanup", "-P", "experiment=mlproj", "-P", "keep=1",
                       "-P", "dry_run=true")
    # the cleanup's own run is RUNNING while it runs: skipped
    assert "2 runs (1 skipped): would delete " in done.stdout
    assert f"run {run_id} (experiment 'mlproj', FINISHED): model tree" in done.stdout
    assert len(client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)) == len(checkpoints)
