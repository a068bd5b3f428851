"""Node names in checkpoints: one byte tensor, read back exactly, old list form still read."""

from __future__ import annotations

import torch

from hype import node_names
from tracker.checkpoints.files import load, save_atomic


def test_names_round_trip_through_a_weights_only_checkpoint(tmp_path):
    names = ["mammal.n.01", "Zoë, \"quoted\"", "a\nb", "", "日本", "x" * 300]
    blob = node_names.encode(names)
    assert isinstance(blob, torch.Tensor) and blob.dtype == torch.uint8
    save_atomic({"embeddings": torch.zeros(len(names), 2), "names": blob}, tmp_path / "c.pth")
    assert load(tmp_path / "c.pth")["names"] == names


def test_a_name_with_a_nul_and_no_names_keep_the_list_form():
    assert node_names.encode(["a\0b", "c"]) == ["a\0b", "c"]
    assert node_names.encode([]) == []
    assert node_names.decode(["a\0b", "c"]) == ["a\0b", "c"]


def test_format_1_checkpoints_with_a_list_of_names_still_load(tmp_path):
    save_atomic({"embeddings": torch.zeros(2, 2), "names": ["a", "b"]}, tmp_path / "old.pth")
    assert load(tmp_path / "old.pth")["names"] == ["a", "b"]
