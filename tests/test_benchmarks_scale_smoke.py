"""Smoke versions of the scale benchmarks (benchmarks/*.py), on a tiny generated closure.

They check that each script still runs end to end and reports what it should; the figures
themselves come from the full runs (docs/performance.md). No WordNet is needed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.datasets import write_tree_closure

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """Import benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def closure(tmp_path) -> Path:
    return write_tree_closure(tmp_path / "tree_closure.csv", branching=3, depth=3)  # 40 nodes


def test_evaluate_nouns_times_a_random_embedding(closure, capsys):
    out = load_script("evaluate_nouns").main(["--dataset", str(closure), "--dim", "3", "--repeat", "2"])
    assert out["nodes"] == 39 and out["edges"] == 3 * 1 + 9 * 2 + 27 * 3
    assert len(out["seconds_all"]) == 2 and out["peak_rss_mb"] > 0
    assert 0 < out["map"] <= 1
    assert "target <= 60 s" in capsys.readouterr().out


def test_nouns_trains_a_tracked_run_and_writes_the_curve(closure, tmp_path):
    curve = tmp_path / "curve.csv"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = load_script("nouns").main([
        "--dataset", str(closure), "--minutes", "5", "--reserve", "0", "--epochs", "6",
        "--burnin", "2", "--lr", "1", "--late-lr", "2", "--late-after", "4",
        "--dim", "2", "--eval-every", "2", "--eval-sample", "10",
        "--exact-every", "0.0001", "--workers", "1", "--keep", "2", "--tracking-uri", uri,
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--curve", str(curve), "--no-pyfunc"])
    assert summary["epochs"] == 6 and 0 < summary["final_map"] <= 1
    lines = curve.read_text().splitlines()
    assert lines[0].startswith("wall_s,epoch,lr,loss,mean_rank_sampled,map_sampled")
    assert len(lines) == 1 + 3 + 1  # three evaluations and the final exact one
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    assert lrs == [0.1, 0.1, 1.0, 1.0, 2.0, 2.0]  # burn-in at lr x 0.1, then the two phases of one run
    assert run.data.params["lr_schedule"] == "lr 1 to epoch 4, lr 2 to epoch 6"
    assert {"map_sampled", "wall_seconds", "map", "final_map"} <= set(run.data.metrics)
    ckpts = sorted(p.name for p in (tmp_path / "ckpt" / summary["run_id"]).glob("tree_epoch*.pth"))
    assert len(ckpts) <= 3 and ckpts[-1] == "tree_epoch0006.pth"  # newest 2, perhaps the best
    # the last 5 epochs averaged (Lorentzian centroid), evaluated exactly and logged as a model file
    avg = summary["average"]
    assert avg["epochs"] == 5 and 0 < avg["map"] <= 1
    assert run.data.metrics["average_map"] == avg["map"]
    saved = torch.load(tmp_path / "ckpt" / summary["run_id"] / "tree_average.pth", weights_only=True)
    assert saved["averaged_epochs"] == 5 and tuple(saved["embeddings"].shape) == (40, 2)
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "hype_model")}
    assert "hype_model/tree_average.pth" in listed


def test_nouns_trains_lorentz_with_exact_evaluations_by_epoch(closure, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = load_script("nouns").main([
        "--dataset", str(closure), "--manifold", "lorentz", "--minutes", "5", "--reserve", "0",
        "--epochs", "6", "--burnin", "2", "--late-lr", "0", "--dim", "2", "--eval-every", "1",
        "--eval-sample", "10", "--exact-every", "0", "--exact-epochs", "3", "--workers", "1",
        "--keep", "1", "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--curve", str(tmp_path / "c.csv"), "--no-pyfunc"])
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.data.params["manifold"] == "lorentz" and run.info.run_name.startswith("nouns-lorentz-dim2")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "map")] == [3, 6]
    assert 0 < summary["final_map"] <= 1


def test_nouns_stops_at_the_wall_clock_budget(closure, tmp_path):
    summary = load_script("nouns").main([
        "--dataset", str(closure), "--minutes", "0.001", "--reserve", "0", "--epochs", "1000",
        "--burnin", "0", "--dim", "2", "--eval-every", "1", "--eval-sample", "10",
        "--exact-every", "0", "--workers", "1", "--keep", "1",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--curve", str(tmp_path / "c.csv"), "--no-pyfunc"])
    assert summary["epochs"] == 1
    assert summary["stop_reason"].startswith("stopped: wall-clock budget reached at epoch 1")


def test_tracking_overhead_measures_sqlite_and_a_server(closure, tmp_path):
    rows = load_script("tracking_overhead").main([
        "--dataset", str(closure), "--epochs", "2", "--skip", "1", "--keep", "1", "--workers", "1",
        "--dim", "2", "--blocks", "1", "--block", "2", "--workdir", str(tmp_path)])
    assert [r["store"] for r in rows] == ["SQLite (embedded)", "mlflow server (proxied)"]
    for r in rows:
        assert r["untracked_s"] > 0 and r["tracked_s"] > 0 and r["overhead_share"] > 0
        assert r["interleaved_ratio"] > -1  # a ratio of two medians of positive walls
        # epochs of a few ms here, below schedstat's tick: the shares are only checked for form
        assert all(r["between_runs_waited"][side]["ran"] >= 0 for side in ("tracked", "untracked"))
        assert math.isfinite(r["rank_time_lost"])


def test_checkpoint_cost_times_both_stores():
    rows = load_script("checkpoint_cost").main(["3"])
    assert [r[0] for r in rows] == ["SQLite (embedded)", "mlflow server (proxied)"]
    for _, before, after in rows:  # ms per checkpoint; after adds the LoggedModel's requests
        assert 0 < before and 0 < after


def test_cleanup_scale_deletes_all_but_the_newest_and_reports_per_deletion(tmp_path):
    rows = load_script("cleanup_scale").main([
        "--runs", "3", "--checkpoints", "5", "--keep", "2", "--repeat", "0", "--settle", "0",
        "--workdir", str(tmp_path)])
    assert [(r["runs"], r["deleted"]) for r in rows] == [(3, 2 * 3 * 3)]  # tracked + local
    assert rows[0]["ms_per_deletion"] > 0
