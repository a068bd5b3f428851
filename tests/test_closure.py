"""Closure of parent-child lists: parsing, DAGs, cycles, subsets, output, and the CLI."""

import csv
import io
import json
import random

import pytest
from click.testing import CliRunner

from cli import cli
from hype import closure as cl
from hype.data import load_edge_csv


def naive_pairs(edges):
    """Reference closure by depth-first search from every node: slow, obviously right."""
    parents = {}
    for c, p in edges:
        parents.setdefault(c, set()).add(p)
    pairs = set()
    for node in parents:
        stack, seen = list(parents[node]), set()
        while stack:
            a = stack.pop()
            if a not in seen:
                seen.add(a)
                stack.extend(parents.get(a, ()))
        pairs |= {(node, a) for a in seen}
    return pairs


def closure_text(closure):
    buf = io.StringIO(newline="")
    sha = cl.write_closure(closure, buf)
    return buf.getvalue(), sha


def read_rows(text):
    """Parse output the way the training loader does (csv over str.splitlines())."""
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["id1", "id2", "weight"]
    assert all(r[2] == "1" for r in rows[1:])
    return [(r[0], r[1]) for r in rows[1:]]


# --- parsing ---------------------------------------------------------------------------


def test_parse_csv_default_and_custom_columns():
    text = "parent,child,note\nanimal,dog,x\nanimal,cat,y\n"
    assert cl.parse_taxonomy(text, "csv") == [("dog", "animal"), ("cat", "animal")]
    text = "kid\tmum\ndog\tanimal\n"
    edges = cl.parse_taxonomy(text, "tsv", child_column="kid", parent_column="mum")
    assert edges == [("dog", "animal")]


def test_parse_json_lists_and_lone_strings():
    text = json.dumps({"dog": ["canine", "pet"], "canine": "animal", "animal": []})
    assert cl.parse_json(text) == [("dog", "canine"), ("dog", "pet"), ("canine", "animal")]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("t.tsv", "child,parent\n", "tsv"),
        ("t.TAB", "", "tsv"),
        ("t.json", "", "json"),
        ("t.csv", "child\tparent\n", "csv"),
        ("t.txt", "child\tparent\na\tb\n", "tsv"),
        ("t.txt", "child,parent\na,b\n", "csv"),
        ("t", '  {"a": ["b"]}', "json"),
    ],
)
def test_detect_format(name, text, expected):
    assert cl.detect_format(name, text) == expected


@pytest.mark.parametrize(
    "text, fmt, message",
    [
        ("", "csv", "empty input"),
        ("child,parent\n", "csv", "header but no"),
        ("kid,parent\na,b\n", "csv", "no column 'child'"),
        ("child,parent\na\n", "csv", "line 2: 1 field(s)"),
        ("child,parent\n,b\n", "csv", "empty node name"),
        ('child,parent\n"a\nb",c\n', "csv", "line break"),
        ("", "json", "empty input"),
        ('{"a": ["b"', "json", "malformed JSON"),
        ('["a", "b"]', "json", "got a list"),
        ('{"a": [1]}', "json", "list of strings"),
        ("{}", "json", "empty input"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, fmt, message):
    with pytest.raises(cl.TaxonomyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cl.parse_taxonomy(text, fmt)


# --- the closure -----------------------------------------------------------------------


def test_dag_with_shared_ancestors():
    # diamond: d has two parents that share the root a
    edges = [("d", "b"), ("d", "c"), ("b", "a"), ("c", "a"), ("e", "d")]
    c = cl.transitive_closure(edges)
    assert set(c.pairs()) == naive_pairs(edges)
    assert ("d", "a") in c.pairs() and c.pairs().count(("d", "a")) == 1
    assert c.counts() == (5, 4 + 3 + 1 + 1)  # e:4, d:3, b:1, c:1


@pytest.mark.parametrize("seed", range(5))
def test_random_dags_match_naive_closure(seed):
    edges = cl.random_taxonomy(300, seed=seed, extra_parent_prob=0.3)
    assert set(cl.transitive_closure(edges).pairs()) == naive_pairs(edges)


def test_random_taxonomy_is_a_seeded_rooted_dag_with_extra_parents():
    edges = cl.random_taxonomy(1000, seed=7, extra_parent_prob=0.2)
    assert edges == cl.random_taxonomy(1000, seed=7, extra_parent_prob=0.2)
    assert edges != cl.random_taxonomy(1000, seed=8, extra_parent_prob=0.2)
    children = [c for c, _ in edges]
    assert len(set(children)) == 999 and "n0" not in children  # n0 is the one root
    assert len(edges) - 999 > 100  # about 20% have a second parent
    assert len(set(edges)) == len(edges) and all(c != p for c, p in edges)
    with pytest.raises(ValueError, match="Invalid node count"):
        cl.random_taxonomy(0, seed=0)


def test_cycle_names_its_nodes():
    edges = [("a", "root"), ("b", "a"), ("c", "b"), ("a", "c"), ("x", "c")]
    with pytest.raises(cl.CycleError) as info:
        cl.transitive_closure(edges)
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    for child, parent in zip(cycle, cycle[1:], strict=False):
        assert (child, parent) in edges
    assert "'a' -> 'root'" not in str(info.value) and "->" in str(info.value)


def test_self_loops_and_duplicates_are_dropped_and_counted():
    edges = [("a", "b"), ("a", "b"), ("c", "c"), ("b", "r"), ("a", "b"), ("d", "d")]
    kept, dropped = cl.clean_edges(edges, examples=1)
    assert kept == [("a", "b"), ("b", "r")]
    assert (dropped.duplicates, dropped.duplicate_examples) == (2, (("a", "b"),))
    assert (dropped.self_loops, dropped.self_loop_examples) == (2, ("c",))


def test_subset_keeps_root_and_descendants_only():
    edges = [("dog", "canine"), ("canine", "mammal"), ("cat", "mammal"), ("mammal", "animal"),
             ("trout", "fish"), ("fish", "animal"), ("robodog", "dog"), ("robodog", "machine")]
    sub = cl.subtree(cl.transitive_closure(edges), "canine")
    assert sub.pairs() == [("dog", "canine"), ("robodog", "canine"), ("robodog", "dog")]
    assert sub.names == ["canine", "dog", "robodog"]
    with pytest.raises(cl.TaxonomyError, match="unknown root 'canin'.*did you mean 'canine'"):
        cl.subtree(cl.transitive_closure(edges), "canin")


def test_drop_descendants_counts_lost_edges():
    c = cl.transitive_closure([("b", "a"), ("c", "b")])
    dropped, lost = cl.drop_descendants(c, ["c"])
    assert dropped.pairs() == [("b", "a")] and lost == {"c": 2}


# --- output ----------------------------------------------------------------------------

AWKWARD = ["a", "a+b", "a,b", 'say "hi"', "a b", "a-b", "Ä", "日本", "ü,ö", "'q'", "z", "A", "é"]


def test_awkward_names_round_trip_in_bytewise_order():
    rng = random.Random(0)
    edges = [(AWKWARD[i], AWKWARD[rng.randrange(i)]) for i in range(1, len(AWKWARD))]
    edges += [(AWKWARD[i], AWKWARD[i - 1]) for i in range(2, len(AWKWARD), 3)]
    edges = list(dict.fromkeys(edges))
    text, sha = closure_text(cl.transitive_closure(edges))
    assert set(read_rows(text)) == naive_pairs(edges)
    lines = text.split("\n")[1:-1]
    assert lines == sorted(lines, key=lambda s: s.encode("utf-8"))  # LC_ALL=C order
    assert text.endswith("\n") and "\r" not in text
    rows = "".join(line + "\n" for line in lines).encode("utf-8")
    assert sha == __import__("hashlib").sha256(rows).hexdigest()


def test_empty_closure_is_a_header_only():
    c = cl.transitive_closure([], nodes=["lonely"])
    assert closure_text(c)[0] == "id1,id2,weight\n" and c.counts() == (0, 0)


# --- the command -----------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(cli, ["data", "closure", *map(str, args)])


def test_cli_csv_tsv_json_give_the_same_file(tmp_path):
    edges = [("dog", "canine"), ("canine", "mammal"), ("dog", "pet"), ("cat", "mammal")]
    (tmp_path / "t.csv").write_text("child,parent\n" + "".join(f"{c},{p}\n" for c, p in edges))
    (tmp_path / "t.tsv").write_text("child\tparent\n" + "".join(f"{c}\t{p}\n" for c, p in edges))
    as_json = {}
    for c, p in edges:
        as_json.setdefault(c, []).append(p)
    (tmp_path / "t.json").write_text(json.dumps(as_json))
    outputs = []
    for name in ("t.csv", "t.tsv", "t.json"):
        out = tmp_path / f"{name}.out.csv"
        result = run("--input", tmp_path / name, "--output", out)
        assert result.exit_code == 0, result.output
        assert "5 nodes, 5 edges" in result.stdout and "sha256" in result.stdout
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] == outputs[2]
    assert set(read_rows(outputs[0])) == naive_pairs(edges)


def test_cli_unicode_and_quotes_round_trip(tmp_path):
    edges = [("a,b", 'say "hi"'), ('say "hi"', "日本"), ("ü ö", "a,b")]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["child", "parent"])
        w.writerows(edges)
    out = tmp_path / "out.csv"
    assert run("--input", src, "--output", out).exit_code == 0
    assert set(read_rows(out.read_text(encoding="utf-8"))) == naive_pairs(edges)


def test_cli_subset_and_custom_columns(tmp_path):
    src = tmp_path / "in.txt"  # sniffed as TSV
    src.write_text("kid\tmum\ndog\tcanine\ncanine\tmammal\ncat\tmammal\n")
    out = tmp_path / "out.csv"
    result = run("--input", src, "--output", out, "--child-column", "kid",
                 "--parent-column", "mum", "--subset", "canine")
    assert result.exit_code == 0, result.output
    assert out.read_text() == "id1,id2,weight\ndog,canine,1\n"
    result = run("--input", src, "--output", out, "--child-column", "kid",
                 "--parent-column", "mum", "--subset", "wolf")
    assert result.exit_code == 2 and "unknown root 'wolf'" in result.output


def test_cli_reports_dropped_edges_on_stderr(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("child,parent\na,b\na,b\nc,c\nb,r\n")
    out = tmp_path / "out.csv"
    result = run("--input", src, "--output", out)
    assert result.exit_code == 0
    assert "dropped 1 repeated edge(s), e.g. 'a' -> 'b'" in result.stderr
    assert "dropped 1 self-loop(s), e.g. 'c'" in result.stderr
    assert read_rows(out.read_text()) == [("a", "b"), ("a", "r"), ("b", "r")]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.csv", "", "empty input"),
        ("cols.csv", "id1,id2\na,b\n", "no column 'child' or 'parent' in the header; columns "),
        ("bad.json", '{"a": ', "malformed JSON"),
        ("cycle.csv", "child,parent\na,b\nb,a\n", "cycle (child -> parent): 'a' -> 'b' -> 'a'"),
        ("latin1.csv", b"child,parent\n\xe9,b\n", "not UTF-8"),
        ("long.csv", "child,parent\n" + "a" * 131_073 + ",b\n",
         "long.csv (csv): line 2: a field is longer than 131072 characters (node names this long"),
        ("long.tsv", "child\tparent\nx\ty\n" + "a" * 131_073 + "\tb\n",
         "long.tsv (tsv): line 3: a field is longer than 131072 characters"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, name, text, message):
    src = tmp_path / name
    src.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run("--input", src, "--output", tmp_path / "out.csv")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "out.csv").exists()


def test_cli_bom_is_dropped_here_and_by_the_training_loader(tmp_path):
    """Excel saves "CSV UTF-8" with a BOM: the closure's input, and its output saved again, read."""
    src = tmp_path / "in.csv"
    src.write_text("child,parent\ndog,canine\ncanine,mammal\n", encoding="utf-8-sig")
    out = tmp_path / "out.csv"
    result = run("--input", src, "--output", out)
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "\ufeff" not in text
    assert read_rows(text) == [("canine", "mammal"), ("dog", "canine"), ("dog", "mammal")]
    resaved = tmp_path / "resaved.csv"
    resaved.write_text(text, encoding="utf-8-sig")
    assert load_edge_csv(resaved).names == ["canine", "dog", "mammal"]


def test_cli_missing_input_file(tmp_path):
    result = run("--input", tmp_path / "nope.csv", "--output", tmp_path / "out.csv")
    assert result.exit_code == 2 and "does not exist" in result.output
