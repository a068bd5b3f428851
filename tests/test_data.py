"""Edge-list loading: validation errors name the file and line."""

import codecs
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from hype.data import DataError, load_edge_csv
from tests.datasets import write_tree_closure
from tracker.checkpoints.files import load

LONG = "a" * 131_073  # one character past the csv module's field limit


@pytest.mark.parametrize("text, message", [
    ("", ":1: empty file"),
    ("id1,id2\na,b\n", ":1: missing column(s) weight"),
    ("id1,id2,weight\na,b,heavy\n", ":2: weight 'heavy' is not a number"),
    ("id1,id2,weight\na,b,1\nc,c,1\n", ":3: self-loop 'c' -> 'c'"),
    ("id1,id2,weight\na,a,1\n", ":2: self-loop"),
    ("id1,id2,weight\n", ":2: no edges after the header"),
    ("id1,id2,weight\na,b\n", ":2: expected 3 fields, got 2"),
    ("id1,id2,weight\na,b,nan\n", ":2: weight 'nan' is not finite"),
    ("id1,id2,weight\n" + LONG + ",b,1\n",
     ":2: a field is longer than 131072 characters (node names this long are not supported)"),
    # an unclosed quote swallows the rest of the file: the line named is where it opens
    ('id1,id2,weight\na,b,1\n"c,d,1\n' + "e,f,1\n" * 30_000,
     ":3: a field is longer than 131072 characters (node names this long are not supported); "
     "the row runs on to line "),
])
def test_bad_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "edges.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_edge_csv(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_edge_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_edge_csv(tmp_path)


def test_a_bom_is_dropped_and_never_part_of_a_name(tmp_path):
    """Excel saves "CSV UTF-8" with a BOM; the header's \\ufeffid1 is id1."""
    text = 'id1,id2,weight\n"x, y",ünï,1\n'
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(text, encoding="utf-8")
    bom.write_text(text, encoding="utf-8-sig")
    graph = load_edge_csv(bom)
    assert graph.names == load_edge_csv(plain).names == ["x, y", "ünï"]
    assert graph.sha256 == hashlib.sha256(bom.read_bytes()).hexdigest()  # the file's own bytes
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(codecs.BOM_UTF8 + b"id1,id2,weight\n\xe9,b,1\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(invalid continuation byte at byte 18\)"):
        load_edge_csv(bad)  # counted from the file's first byte, BOM included


def test_train_cli_accepts_a_bom(sqlite_tracking, tmp_path):
    src = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    names = load_edge_csv(src).names
    src.write_text(src.read_text(), encoding="utf-8-sig")
    result = CliRunner().invoke(cli, [
        "train", "--dataset", str(src), "--dim", "2", "--epochs", "2", "--burnin", "1", "--quiet",
        "--no-pyfunc", "--tracking-uri", sqlite_tracking.tracking_uri,
        "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert result.exit_code == 0, result.output
    (final,) = [line.split(": ", 1)[1] for line in result.stdout.splitlines()
                if line.startswith("Final model file: ")]
    assert load(Path(final))["names"] == names  # the BOM is in no name


def test_names_with_commas_and_unicode_and_stable_indices(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text('id1,id2,weight\n"x, y",ünï,1\nz,ünï,2\n')
    b.write_text('weight,id2,id1\n2,ünï,z\n1,ünï,"x, y"\n')  # other column and row order
    ga, gb = load_edge_csv(a), load_edge_csv(b)
    assert ga.names == gb.names == sorted(["x, y", "ünï", "z"])
    assert (ga.edges == gb.edges).all()
    assert ga.num_edges == 2


def test_mammal_closure_shape():
    g = load_edge_csv("data/mammal_closure.csv")
    assert (g.num_nodes, g.num_edges) == (1180, 6540)
    # CSR adjacency: out-neighbours of each node are sorted
    for u in range(0, g.num_nodes, 97):
        row = g.indices[g.indptr[u]:g.indptr[u + 1]]
        assert (row[:-1] < row[1:]).all()
