"""The epoch loop: seeded and deterministic, resumable exactly, validated settings."""

import pytest
import torch

from hype.config import TrainConfig
from hype.data import load_edge_csv
from hype.train import TrainState, check_compatible, train
from tests.datasets import write_tree_closure


@pytest.fixture
def graph(tmp_path):
    return load_edge_csv(write_tree_closure(tmp_path / "t.csv"))


@pytest.mark.parametrize("manifold", ["poincare", "lorentz", "euclidean"])
def test_same_seed_same_embedding(graph, manifold):
    cfg = TrainConfig(manifold=manifold, dim=3, epochs=6, burnin=2, negs=5, eval_every=3)
    a = train(graph, cfg, progress=False)
    b = train(graph, cfg, progress=False)
    assert torch.equal(a.state.emb, b.state.emb)
    c = train(graph, TrainConfig(**{**cfg.to_dict(), "seed": 1}), progress=False)
    assert not torch.equal(a.state.emb, c.state.emb)


def test_resume_from_checkpoint_equals_uninterrupted(graph):
    cfg = TrainConfig(dim=3, epochs=8, burnin=2, negs=5)
    full = train(graph, cfg, progress=False)
    half = train(graph, TrainConfig(**{**cfg.to_dict(), "epochs": 4}), progress=False)
    state = TrainState.from_checkpoint(half.state.checkpoint())
    rest = train(graph, cfg, state=state, progress=False)
    assert [r.epoch for r in rest.history] == [5, 6, 7, 8]
    assert torch.equal(rest.state.emb, full.state.emb)


def test_learns_the_tree(graph):
    cfg = TrainConfig(dim=5, epochs=60, burnin=5, negs=10, lr=1.0, eval_every=60)
    result = train(graph, cfg, progress=False)
    assert result.history[-1].metrics["map"] > 0.9
    assert result.history[-1].loss < result.history[0].loss


def test_torch_reference_backend_learns_too(graph):
    cfg = TrainConfig(dim=5, epochs=30, burnin=2, negs=10, lr=1.0, eval_every=30, backend="torch")
    assert train(graph, cfg, progress=False).history[-1].metrics["map"] > 0.6


@pytest.mark.parametrize("field, value, message", [
    ("dim", 0, "Invalid dim: 0"), ("lr", -1.0, "Invalid lr: -1.0"), ("negs", 0, "Invalid negs"),
    ("manifold", "sphere", "Invalid manifold: 'sphere'"), ("burnin_multiplier", 2.0, "burnin_multiplier"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_incompatible_checkpoint_says_what_differs(graph):
    state = train(graph, TrainConfig(dim=3, epochs=1, burnin=0), progress=False).state
    with pytest.raises(ValueError, match="dim=3.*dim=4"):
        check_compatible(state, graph, TrainConfig(dim=4))
    with pytest.raises(ValueError, match="manifold='poincare'.*manifold='lorentz'"):
        check_compatible(state, graph, TrainConfig(dim=3, manifold="lorentz"))
