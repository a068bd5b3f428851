"""A user's own taxonomy end to end: 20k-node parent-child list -> closure -> tracked training
with retention -> cleanup of the experiment, all through the CLI."""

import csv
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from hype.closure import random_taxonomy
from tracker import layout

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_20k_node_taxonomy_trains_and_cleans_up(tmp_path):
    with open(tmp_path / "catalogue.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["child", "parent"])
        w.writerows(random_taxonomy(20_000, seed=7, extra_parent_prob=0.05))
    _cli("data", "closure", "--input", "catalogue.csv", "--output", "closure.csv", cwd=tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = _cli("train", "--dataset", "closure.csv", "--tracking-uri", uri, "--checkpoint-dir", "ckpt",
               "--experiment", "catalogue", "--epochs", "4", "--burnin", "1", "--dim", "5", "--negs", "10",
               "--eval-every", "2", "--eval-sample", "500", "--monitor", "map_sampled",
               "--keep-checkpoints", "2", "--no-keep-best", "--no-pyfunc", "--quiet", cwd=tmp_path)
    assert "Retention freed" in out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("catalogue")
    (run,) = client.search_runs([exp.experiment_id])
    assert int(run.data.params["dataset_nodes"]) == 20_000
    assert "map_sampled" in run.data.metrics and "final_map" in run.data.metrics
    tracked = sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id,
                                                                               layout.CHECKPOINT_FOLDER))
    assert tracked == ["closure_epoch0003.pth", "closure_epoch0004.pth"]

    out = _cli("cleanup", "--experiment", "catalogue", "--keep", "1", "--tracking-uri", uri, cwd=tmp_path)
    tracked = sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id,
                                                                               layout.CHECKPOINT_FOLDER))
    assert tracked == ["closure_epoch0004.pth"]
    local = sorted(p.name for p in (tmp_path / "ckpt" / run.info.run_id).glob("*.pth"))
    assert local == ["closure.pth", "closure_epoch0004.pth"]  # the final model is never deleted
    assert [a.path for a in client.list_artifacts(run.info.run_id, layout.FINAL_FOLDER)]
