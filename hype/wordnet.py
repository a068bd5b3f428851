"""WordNet 3.0 noun closure and its subtrees (the mammal reference), read through nltk.

nltk 3.10 reads corpora only from its allowed data roots (nltk.data.path), refuses
symlinked and hard-linked files, and its WordNet reader needs `lexnames` (which
Debian's wordnet-base does not ship) and `index.sense` (wordnet-sense-index). So a
plain WordNet dict folder such as /usr/share/wordnet is first copied into an NLTK data
folder of our own (<cache>/nltk_data/corpora/wordnet), and that folder is put on
nltk.data.path for as long as the reader is used. An NLTK data folder is used as is.
"""

import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hype.closure import (
    Closure,
    TaxonomyError,
    drop_descendants,
    subtree,
    transitive_closure,
)

DEBIAN_DIR = Path("/usr/share/wordnet")  # apt install wordnet-base wordnet-sense-index

# Edges dropped from a subtree unless the caller says otherwise (--exclude replaces
# these). For mammal.n.01 they are the two hyponyms that the published reference data
# set leaves out (6,542 -> 6,540 edges); both name mammals by a trait (tusks, sex)
# rather than by kind, which is our reading of why. Other roots drop nothing.
DEFAULT_EXCLUDES: dict[str, tuple[str, ...]] = {
    "mammal.n.01": ("tusker.n.01", "female_mammal.n.01"),
}

# The files nltk's WordNetCorpusReader opens; lexnames is written if the source lacks it.
_DICT_FILES = tuple(
    f"{kind}.{pos}" for pos in ("noun", "verb", "adj", "adv") for kind in ("data", "index")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")) + ("index.sense",)

# WordNet 3.0's lexicographer files, numbered from 00 (lexnames(5WN)).
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food "
    "noun.group noun.location noun.motive noun.object noun.person noun.phenomenon "
    "noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetNotFound(LookupError):
    """No usable WordNet; the message says where we looked and how to get one."""


@dataclass(frozen=True)
class Source:
    """Where WordNet lives: a plain dict folder (copied first) or an NLTK data folder."""

    path: Path
    kind: str  # "dict" (data.noun, index.noun, ... directly inside) or "nltk_data"


# --- finding and opening ---------------------------------------------------------------


def find_wordnet(wordnet_dir: str | Path | None = None) -> Source:
    """The WordNet to read: `wordnet_dir` if given, else Debian's, else nltk's search path."""
    if wordnet_dir is not None:
        source = _classify(Path(wordnet_dir))
        if source is None:
            raise WordNetNotFound(
                f"no WordNet in {wordnet_dir}: expected a WordNet dict folder (data.noun, "
                "index.noun, ...) or an NLTK data folder holding corpora/wordnet"
            )
        return source
    candidates = [DEBIAN_DIR] + [Path(str(p)) for p in _nltk_search_path()]
    for path in candidates:
        source = _classify(path)
        if source is not None:
            return source
    raise WordNetNotFound(
        f"no WordNet found in {DEBIAN_DIR} or nltk's data path; install the Debian packages "
        "wordnet-base and wordnet-sense-index, or pass --wordnet-dir DIR"
    )


def _nltk_search_path() -> list[str]:
    import nltk.data

    return [p for p in nltk.data.path if isinstance(p, str)]


def _classify(path: Path) -> Source | None:
    if (path / "data.noun").is_file():
        return Source(path, "dict")
    corpora = path / "corpora"
    if (corpora / "wordnet" / "data.noun").is_file() or (corpora / "wordnet.zip").is_file():
        return Source(path, "nltk_data")
    return None


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hype"


def stage(source_dir: Path, cache_dir: Path) -> Path:
    """Copy a WordNet dict folder into <cache_dir>/nltk_data/corpora/wordnet; return nltk_data.

    Copies, not links: nltk refuses symlinks and hard links. A file already there with
    the source's size and mtime is kept, so only the first build pays for the copy.
    """
    missing = [f for f in _DICT_FILES if not (source_dir / f).is_file()]
    if missing:
        hint = " (Debian: apt install wordnet-sense-index)" if "index.sense" in missing else ""
        raise WordNetNotFound(f"{source_dir} lacks {', '.join(missing)}{hint}")
    data_root = cache_dir / "nltk_data"
    target = data_root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in _DICT_FILES + ("lexnames",):
        src = source_dir / name
        if src.is_file():
            _copy_if_changed(src, target / name)
        elif not (target / name).is_file():  # only lexnames can be missing here
            _write_private(target / name, _lexnames_text())
    return data_root


def _copy_if_changed(src: Path, dst: Path) -> None:
    s = src.stat()
    if dst.is_file():
        d = dst.stat()
        if (d.st_size, d.st_mtime_ns) == (s.st_size, s.st_mtime_ns):
            return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)  # keeps the mtime that the check above compares
    tmp.chmod(0o644)  # nltk refuses a group- or world-writable file
    os.replace(tmp, dst)  # a concurrent or interrupted build never sees half a file


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="ascii")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _lexnames_text() -> str:
    return "".join(
        f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
        for i, name in enumerate(_LEXNAMES)
    )


@contextmanager
def open_wordnet(source: Source, *, cache_dir: Path | None = None) -> Iterator:
    """An nltk WordNetCorpusReader over `source`, valid inside the `with` block.

    nltk opens data files lazily and checks each open against nltk.data.path, so the
    data folder stays first on that path until the block ends, then the path is restored.
    First on the path also matters because the reader looks up "corpora/wordnet" itself
    (for its version map) and must find this same copy.
    """
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if source.kind == "dict":
        data_root = stage(source.path, cache_dir or default_cache_dir())
    else:
        data_root = source.path
    saved = list(nltk.data.path)
    nltk.data.path.insert(0, str(data_root.resolve()))
    try:
        root = nltk.data.find("corpora/wordnet")  # a folder, or wordnet.zip's member
        with warnings.catch_warnings():
            # "multilingual functions are not available": we pass no Open Multilingual
            # WordNet on purpose; only English noun relations are read.
            warnings.simplefilter("ignore", UserWarning)
            reader = WordNetCorpusReader(root, None)
        yield reader
    finally:
        nltk.data.path[:] = saved


def noun_synset_name(reader, name: str) -> str:
    """WordNet's own name for the noun synset `name`; TaxonomyError if there is none.

    nltk also finds a synset by any of its lemmas (domestic_dog.n.01 is dog.n.01), but
    closure nodes carry the canonical name, so callers should use what this returns.
    Cheap, so a command can reject a bad --root before the slow read.
    """
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        synset = reader.synset(name)
    except (WordNetError, ValueError) as e:
        raise TaxonomyError(f"unknown synset {name!r} (expected e.g. mammal.n.01): {e}") from None
    if synset.pos() != "n":
        raise TaxonomyError(f"{name!r} is not a noun synset (part of speech {synset.pos()!r})")
    return synset.name()


# --- the closure -----------------------------------------------------------------------


@dataclass(frozen=True)
class NounGraph:
    """The two noun relations the closure follows, by synset name."""

    hypernyms: list[tuple[str, str]]  # (synset, hypernym)
    instance_hypernyms: list[tuple[str, str]]  # (instance, instance hypernym)
    instances: set[str]  # every instance hyponym of some noun synset
    synsets: list[str]  # every noun synset, in file order


def noun_synset_count(reader) -> int:
    """Synset lines in data.noun (the license header lines start with spaces)."""
    with reader.open("data.noun") as fh:
        return sum(1 for line in fh if line[:1].isdigit())


def read_noun_graph(reader, *, progress: Callable[[Iterable], Iterable] = iter) -> NounGraph:
    """Every noun synset's hypernyms, instance hypernyms and instance hyponyms.

    This is the slow part (nltk parses all of data.noun, ~4 s); `progress` wraps the
    synset iterator, e.g. with a tqdm bar.
    """
    hypernyms, instance_hypernyms = [], []
    instances: set[str] = set()
    synsets = []
    for s in progress(reader.all_synsets("n")):
        name = s.name()
        synsets.append(name)
        hypernyms.extend((name, h.name()) for h in s.hypernyms())
        instance_hypernyms.extend((name, h.name()) for h in s.instance_hypernyms())
        instances.update(i.name() for i in s.instance_hyponyms())
    return NounGraph(hypernyms, instance_hypernyms, instances, synsets)


def noun_closure(graph: NounGraph) -> Closure:
    """The noun closure as data/README.md defines it.

    Every synset s gets s's hypernym closure. Every instance i additionally gets, for
    each h in the closure of i's instance hypernyms, h itself and h's hypernym closure.
    """
    # the same node set for both relations, so that node ids agree between them
    nodes = set(graph.synsets) | graph.instances
    hyper = transitive_closure(graph.hypernyms, nodes=nodes)
    inst = transitive_closure(graph.instance_hypernyms, nodes=nodes)
    anc = list(hyper.ancestors)
    for name in graph.instances:
        i = hyper.index(name)
        hs = inst.ancestors[i]
        if len(hs):
            anc[i] = np.unique(np.concatenate([anc[i], hs] + [hyper.ancestors[h] for h in hs]))
    return Closure(hyper.names, anc)


def select(
    closure: Closure, root: str | None, exclude: Iterable[str] | None = None
) -> tuple[Closure, dict[str, int]]:
    """The closure under `root` (all of it if None), minus the edges from `exclude`.

    `exclude=None` means DEFAULT_EXCLUDES for this root (none for most roots).
    Returns the result and, per excluded synset, how many edges it lost.
    """
    if root is not None:
        closure = subtree(closure, root)
    if exclude is None:
        exclude = DEFAULT_EXCLUDES.get(root, ())
    outside = [name for name in exclude if name not in closure]
    if outside:
        where = f"under {root}" if root else "in the noun closure"
        raise TaxonomyError(f"cannot exclude {', '.join(outside)}: not {where}")
    return drop_descendants(closure, exclude)
