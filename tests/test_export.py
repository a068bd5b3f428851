"""`cli.py export` and `cli.py evaluate` on checkpoints and final models of real runs."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from hype.config import TrainConfig
from hype.data import load_edge_csv
from hype.evaluate import reconstruction
from tests.datasets import write_tree_closure
from tracker.checkpoints.files import load
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def trained(sqlite_tracking, tmp_path):
    """A finished Poincaré run and a finished Lorentz run of a small tree."""
    path = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    graph = load_edge_csv(path)
    out = {}
    for manifold in ("poincare", "lorentz"):
        config = TrainConfig(manifold=manifold, dim=2, epochs=4, burnin=1, eval_every=2, negs=4, lr=1.0)
        tconfig = TrackerConfig(store_every=True,
                                model_name=f"tree_{manifold}", keep=2, checkpoint_root=tmp_path / "ckpt",
                                log_pyfunc=False)
        out[manifold] = run_training(uri=sqlite_tracking.tracking_uri, graph=graph, config=config,
                                     tconfig=tconfig, experiment="t", progress=False)
    return sqlite_tracking.tracking_uri, path, out


def read_tsv(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [r[0] for r in rows], torch.tensor([[float(x) for x in r[1:]] for r in rows], dtype=torch.float64)


def test_export_checkpoint_round_trips_exactly(trained, tmp_path):
    _, _, out = trained
    ckpt_path = out["poincare"].final_path.with_name("tree_poincare_epoch0004.pth")
    result = invoke("export", str(ckpt_path), "--output", str(tmp_path / "emb.tsv"))
    assert result.exit_code == 0, result.output
    names, coords = read_tsv(tmp_path / "emb.tsv")
    ckpt = load(ckpt_path)
    assert names == list(ckpt["names"])
    assert torch.equal(coords, ckpt["embeddings"].to(torch.float64))  # repr: exact float64
    assert coords.shape == (13, 2)
    assert "13 nodes x 2 coordinates" in result.output


def test_export_run_id_downloads_the_final_model(trained, tmp_path):
    uri, _, out = trained
    run = out["poincare"]
    result = invoke("export", "--run-id", run.run_id, "--tracking-uri", uri, "-o", str(tmp_path / "f.tsv"))
    assert result.exit_code == 0, result.output
    _, coords = read_tsv(tmp_path / "f.tsv")
    assert torch.equal(coords, load(run.final_path)["embeddings"].to(torch.float64))
    assert f"run {run.run_id}: hype_model/tree_poincare.pth" in result.output


def test_lorentz_as_is_or_in_the_ball(trained, tmp_path):
    uri, _, out = trained
    run = out["lorentz"]
    result = invoke("export", "--run-id", run.run_id, "--tracking-uri", uri, "-o", str(tmp_path / "l.tsv"))
    assert result.exit_code == 0, result.output
    _, hyperboloid = read_tsv(tmp_path / "l.tsv")
    assert hyperboloid.shape == (13, 3)  # dim + 1 ambient coordinates
    # points on the hyperboloid: -x0^2 + |x|^2 = -1
    assert torch.allclose(-hyperboloid[:, 0] ** 2 + (hyperboloid[:, 1:] ** 2).sum(1),
                          torch.full((13,), -1.0, dtype=torch.float64), atol=1e-6)
    assert invoke("export", str(run.final_path), "--ball", "-o", str(tmp_path / "b.tsv")).exit_code == 0
    _, ball = read_tsv(tmp_path / "b.tsv")
    assert ball.shape == (13, 2) and bool((ball.norm(dim=1) < 1).all())
    result = invoke("export", str(out["poincare"].final_path), "--ball", "-o", str(tmp_path / "x.tsv"))
    assert result.exit_code == 2 and "already in the ball" in result.output


def test_export_refuses_pickled_code_and_bad_input(trained, tmp_path):
    uri, _, out = trained
    evil = tmp_path / "evil.pth"
    torch.save({"embeddings": torch.zeros(1, 2), "names": ["a"], "x": RuntimeError("boom")}, evil)
    result = invoke("export", str(evil), "-o", str(tmp_path / "e.tsv"))
    assert result.exit_code == 1 and "refused to load" in result.output
    assert not (tmp_path / "e.tsv").exists()
    result = invoke("export", "--run-id", "f" * 32, "--tracking-uri", uri, "-o", str(tmp_path / "e.tsv"))
    assert result.exit_code == 1 and result.output.startswith(f"Error: no run with id '{'f' * 32}'")
    result = invoke("export", str(evil), "--run-id", "x", "-o", str(tmp_path / "e.tsv"))
    assert result.exit_code == 2 and "either CHECKPOINT or --run-id" in result.output
    assert list(tmp_path.glob("*.tsv")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_evaluate_checkpoint_and_run(trained):
    uri, dataset, out = trained
    run = out["poincare"]
    graph = load_edge_csv(dataset)
    expected = reconstruction(load(run.final_path)["embeddings"], graph, "poincare")
    result = invoke("evaluate", str(run.final_path), "--dataset", str(dataset), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["mean_rank"] == pytest.approx(expected.mean_rank)
    assert got["map"] == pytest.approx(expected.map)
    assert (got["nodes"], got["edges"], got["manifold"]) == (expected.nodes, 21, "poincare")
    # --run-id: the final model, on the dataset the run recorded
    result = invoke("evaluate", "--run-id", run.run_id, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert f"mean rank {expected.mean_rank:.3f}, MAP {expected.map:.4f} (12 nodes, 21 edges)" in result.output
    assert str(dataset) in result.output


def test_evaluate_on_a_dataset_the_embedding_does_not_cover(trained, tmp_path):
    _, _, out = trained
    other = write_tree_closure(tmp_path / "bigger_closure.csv", depth=3)
    result = invoke("evaluate", str(out["poincare"].final_path), "--dataset", str(other))
    assert result.exit_code == 1
    assert "27 of the dataset's 40 nodes are not in the embedding" in result.output
