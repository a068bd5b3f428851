"""Edge-list loading: validation errors name the file and line."""

import pytest

from hype.data import DataError, load_edge_csv


@pytest.mark.parametrize("text, message", [
    ("", ":1: empty file"),
    ("id1,id2\na,b\n", ":1: missing column(s) weight"),
    ("id1,id2,weight\na,b,heavy\n", ":2: weight 'heavy' is not a number"),
    ("id1,id2,weight\na,b,1\nc,c,1\n", ":3: self-loop 'c' -> 'c'"),
    ("id1,id2,weight\na,a,1\n", ":2: self-loop"),
    ("id1,id2,weight\n", ":2: no edges after the header"),
    ("id1,id2,weight\na,b\n", ":2: expected 3 fields, got 2"),
    ("id1,id2,weight\na,b,nan\n", ":2: weight 'nan' is not finite"),
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
