"""The defaults are the best recipe measured: `python cli.py train` with no options, and
`mlflow run .` with none, reach the published mammal quality, with early stopping after 6 epochs
without a new best (the seed's "patience 6 epochs"); large graphs evaluate a sample by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from mlflow.projects._project_spec import load_project
from mlflow.tracking import MlflowClient

from cli import cli
from tests.datasets import write_tree_closure

ROOT = Path(__file__).resolve().parent.parent


def _only_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def test_train_with_no_options_reaches_map_097_and_mean_rank_109(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # where the run is stored is all this command line says; nothing of the recipe
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", uri,
                           "--checkpoint-dir", str(tmp_path / "ckpt"), "--quiet", "--no-pyfunc"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = _only_run(uri)
    assert run.data.metrics["final_map"] >= 0.97, run.data.metrics
    assert run.data.metrics["final_mean_rank"] <= 1.09, run.data.metrics
    p = run.data.params
    assert (p["eval_every"], p["patience"], p["monitor"], p["eval_sample"]) == ("1", "6", "map", "0")
    # patience counted epochs: the stop came 6 epochs after the best
    best = int(run.data.tags["hype.best_epoch"])
    stopped = max(m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "loss"))
    assert stopped == best + 6 and "no improvement in map for 6 evaluations" in done.stdout


def test_mlflow_run_without_parameters_trains_with_trains_defaults():
    """Each main-entry parameter's default is the one `cli.py train` has for that option."""
    entry = load_project(str(ROOT))._entry_points["main"]
    train = {p.name: p for p in cli.commands["train"].params}
    aliases = {"keep_checkpoints": "keep"}
    own = {"dataset": "data/mammal_closure.csv",  # train's default, written relative to the project
           "keep_checkpoints": "20",  # train's callback turns its None into 20
           "monitor": "auto",  # train's None: map, or map_sampled when a sample is evaluated
           "epochs": "300", "checkpoint_dir": "checkpoints"}  # train's None: these
    for name, param in entry.parameters.items():
        if name in own:
            assert str(param.default) == own[name], name
            continue
        option = train[aliases.get(name, name)]
        assert str(param.default) == str(option.default), f"{name}: {param.default} != {option.default}"


def test_graphs_above_the_threshold_evaluate_a_sample_and_monitor_it(tmp_path, monkeypatch):
    import hype.config

    monkeypatch.setattr(hype.config, "SAMPLE_ABOVE_NODES", 10)  # the tree has 13 nodes
    dataset = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(dataset), "--tracking-uri", uri,
                                      "--checkpoint-dir", str(tmp_path / "ckpt"), "--epochs", "3",
                                      "--burnin", "1", "--quiet", "--no-pyfunc"])
    assert result.exit_code == 0, result.output
    run = _only_run(uri)
    assert run.data.params["eval_sample"] == str(hype.config.AUTO_SAMPLE)
    assert run.data.params["monitor"] == "map_sampled"
    assert {"map_sampled", "final_map"} <= set(run.data.metrics) and "map" not in run.data.metrics
