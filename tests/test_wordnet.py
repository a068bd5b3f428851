"""The WordNet builder reproduces the reference noun closure and the bundled mammal file.

Needs WordNet 3.0 (Debian: wordnet-base and wordnet-sense-index, or an NLTK data folder);
skips when there is none. Reading WordNet through nltk takes ~7 s, so it is read once
per module; the CLI test reads it again.
"""

import io
from pathlib import Path

import nltk.data
import pytest
from click.testing import CliRunner

from cli import cli
from hype import closure as cl
from hype import wordnet as wn

REPO = Path(__file__).resolve().parents[1]
NOUN_SHA = "bd6e2e069a5f0d8f6100d8c9f0d90b86a04402820e36f1c5d46e18d521c4c206"
MAMMAL_SHA = "84bfec0443c1c2e8b2c8250afab31927b2caaaefa2e1a20ff8741e23554175dc"


def _installed_wordnet():
    try:
        return wn.find_wordnet()
    except wn.WordNetNotFound as e:
        pytest.skip(f"no WordNet installed: {e}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hype_cache")


@pytest.fixture(scope="module")
def reader(cache_dir):
    source = _installed_wordnet()
    saved = list(nltk.data.path)
    with wn.open_wordnet(source, cache_dir=cache_dir) as r:
        assert r.get_version() == "3.0"
        yield r
    assert nltk.data.path == saved  # the data folder is authorised only inside the block


@pytest.fixture(scope="module")
def nouns(reader):
    return wn.noun_closure(wn.read_noun_graph(reader))


def test_noun_closure_matches_the_reference(nouns):
    assert nouns.counts() == (82_115, 743_086)
    assert cl.rows_sha256(nouns) == NOUN_SHA


def test_mammal_subset_is_the_bundled_file(nouns):
    mammals, lost = wn.select(nouns, "mammal.n.01")
    assert lost == {"tusker.n.01": 1, "female_mammal.n.01": 1}
    assert mammals.counts() == (1_180, 6_540)
    buf = io.StringIO(newline="")
    assert cl.write_closure(mammals, buf) == MAMMAL_SHA
    assert buf.getvalue().encode() == (REPO / "data" / "mammal_closure.csv").read_bytes()


def test_excludes_are_explicit(nouns):
    kept, lost = wn.select(nouns, "mammal.n.01", exclude=[])
    assert lost == {} and kept.counts()[1] == 6_542  # before the reference's filter
    _, lost = wn.select(nouns, "dog.n.01")
    assert lost == {}  # the mammal default applies to mammal.n.01 only
    with pytest.raises(cl.TaxonomyError, match="unknown root 'run.v.01'"):
        wn.select(nouns, "run.v.01")  # not a noun
    with pytest.raises(cl.TaxonomyError, match="cannot exclude cat.n.01: not under dog.n.01"):
        wn.select(nouns, "dog.n.01", exclude=["cat.n.01"])


def test_synset_names_are_checked_before_the_slow_read(reader):
    assert wn.noun_synset_name(reader, "domestic_dog.n.01") == "dog.n.01"
    with pytest.raises(cl.TaxonomyError, match="not a noun synset"):
        wn.noun_synset_name(reader, "run.v.01")
    with pytest.raises(cl.TaxonomyError, match="unknown synset 'mamal.n.01'"):
        wn.noun_synset_name(reader, "mamal.n.01")


@pytest.mark.slow
def test_cli_builds_the_mammal_file(tmp_path, cache_dir, nouns):
    # `nouns` read a plain dict folder (copied into cache_dir/nltk_data); read that copy
    # here as an NLTK data folder, so both kinds of source are covered.
    source = _installed_wordnet()
    folder = cache_dir / "nltk_data" if source.kind == "dict" else source.path
    out = tmp_path / "mammals.csv"
    args = ["data", "wordnet", "--root", "mammal.n.01", "-o", out, "--wordnet-dir", folder]
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert "1,180 nodes, 6,540 edges" in result.stdout and MAMMAL_SHA in result.stdout
    assert "excluded tusker.n.01: 1 edge(s)" in result.stderr
    assert out.read_bytes() == (REPO / "data" / "mammal_closure.csv").read_bytes()


def test_staged_copy_has_lexnames(reader, cache_dir):
    if wn.find_wordnet().kind != "dict":
        pytest.skip("WordNet came from an NLTK data folder; nothing was staged")
    lexnames = (cache_dir / "nltk_data" / "corpora" / "wordnet" / "lexnames").read_text()
    lines = lexnames.splitlines()
    assert len(lines) == 45 and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"


def test_find_wordnet_without_any(tmp_path, monkeypatch):
    monkeypatch.setattr(wn, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(wn.WordNetNotFound, match="install the Debian packages wordnet-base"):
        wn.find_wordnet()


def test_cli_without_wordnet_says_so_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["data", "wordnet", "-o", str(tmp_path / "x.csv"),
                                      "--wordnet-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no WordNet in {tmp_path}: expected")
    assert result.output.count("\n") == 1
