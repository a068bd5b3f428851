"""`data`: build `id1,id2,weight` closure files from WordNet or from a parent-child list."""

import os
from pathlib import Path

import click

from hype import closure as cl
from hype import wordnet as wn
from hype.data import DataError, read_text

_OUTPUT = click.Path(dir_okay=False, path_type=Path)


@click.group()
def data():
    """Build training data: transitive closures in id1,id2,weight form."""


@data.command()
@click.option(
    "--root",
    metavar="SYNSET",
    help="Keep only this synset and its hyponyms, e.g. mammal.n.01. [default: all nouns]",
)
@click.option(
    "--exclude",
    metavar="SYNSET",
    multiple=True,
    help="Drop the edges whose hyponym (id1) is SYNSET; repeatable. Replaces the default: "
    "for --root mammal.n.01, tusker.n.01 and female_mammal.n.01 (as in the published "
    "mammal data set); nothing for other roots.",
)
@click.option(
    "--no-default-exclude", is_flag=True, help="Keep every edge unless --exclude names it."
)
@click.option("--output", "-o", required=True, type=_OUTPUT, help="Where to write the CSV.")
@click.option(
    "--wordnet-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A WordNet dict folder (data.noun, ...) or an NLTK data folder with corpora/wordnet. "
    f"[default: {wn.DEBIAN_DIR}, else nltk's data path]",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where a WordNet dict folder is copied for nltk. [default: $XDG_CACHE_HOME/hype "
    "or ~/.cache/hype]",
)
def wordnet(root, exclude, no_default_exclude, output, wordnet_dir, cache_dir):
    """The WordNet 3.0 noun closure, or the subtree under --root."""
    from hype import progress

    if exclude:
        excludes = list(exclude)
    else:
        excludes = [] if no_default_exclude else None  # None: the root's default
    try:
        source = wn.find_wordnet(wordnet_dir)
        with wn.open_wordnet(source, cache_dir=cache_dir) as reader:
            click.echo(f"WordNet {reader.get_version()} from {source.path}", err=True)
            # check names now, not after the slow read
            if root is not None:
                root = _canonical(reader, root, "--root")
            if excludes:
                excludes = [_canonical(reader, name, "--exclude") for name in excludes]
            total = wn.noun_synset_count(reader)

            def bar(synsets):  # not a terminal: no bar, a plain line every 10 s
                return progress.bar(synsets, total=total, desc="nouns", unit="synset")

            graph = wn.read_noun_graph(reader, progress=bar)
    except wn.WordNetNotFound as e:
        raise click.ClickException(str(e)) from None
    try:
        closure, lost = wn.select(wn.noun_closure(graph), root, excludes)
    except cl.TaxonomyError as e:  # an --exclude outside the --root subtree
        raise click.ClickException(str(e)) from None
    for name, n in lost.items():
        click.echo(f"excluded {name}: {n} edge(s)", err=True)
    _write(closure, output)


def _canonical(reader, name: str, option: str) -> str:
    try:
        canonical = wn.noun_synset_name(reader, name)
    except cl.TaxonomyError as e:
        raise click.BadParameter(str(e), param_hint=option) from None
    if canonical != name:
        click.echo(f"{option} {name} is WordNet's {canonical}; using that name", err=True)
    return canonical


@data.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Parent-child list: CSV/TSV with a header, or JSON {child: [parents]}.",
)
@click.option("--output", "-o", required=True, type=_OUTPUT, help="Where to write the CSV.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("auto",) + cl.FORMATS),
    default="auto",
    show_default=True,
    help="auto: by extension (.csv .tsv .tab .json), else by sniffing the first line.",
)
@click.option("--child-column", default="child", show_default=True, help="CSV/TSV column.")
@click.option("--parent-column", default="parent", show_default=True, help="CSV/TSV column.")
@click.option("--subset", metavar="ROOT", help="Keep only ROOT and its descendants.")
def closure(input_path, output, fmt, child_column, parent_column, subset):
    """The transitive closure of a taxonomy (a DAG is fine; a cycle is an error).

    Writes id1,id2,weight rows with id1 the descendant, id2 the ancestor and weight 1,
    sorted bytewise, with a header. Repeated edges and self-loops are dropped, and
    reported on stderr. The input is UTF-8, with or without a BOM; a CSV/TSV field may
    hold at most 131072 characters.
    """
    try:
        _, text = read_text(input_path)  # the training loader's reading: a BOM is dropped
    except DataError as e:
        raise click.ClickException(str(e)) from None
    if fmt == "auto":
        fmt = cl.detect_format(input_path.name, text)
    try:
        edges = cl.parse_taxonomy(
            text, fmt, child_column=child_column, parent_column=parent_column
        )
        edges, dropped = cl.clean_edges(edges)
        _report(dropped)
        result = cl.transitive_closure(edges)
    except cl.TaxonomyError as e:
        raise click.ClickException(f"{input_path} ({fmt}): {e}") from None
    if subset is not None:
        try:
            result = cl.subtree(result, subset)
        except cl.TaxonomyError as e:
            raise click.BadParameter(str(e), param_hint="--subset") from None
    _write(result, output)


def _report(dropped: cl.Dropped) -> None:
    if dropped.duplicates:
        eg = "; ".join(f"{c!r} -> {p!r}" for c, p in dropped.duplicate_examples)
        click.echo(f"dropped {dropped.duplicates} repeated edge(s), e.g. {eg}", err=True)
    if dropped.self_loops:
        eg = "; ".join(repr(n) for n in dropped.self_loop_examples)
        click.echo(f"dropped {dropped.self_loops} self-loop(s), e.g. {eg}", err=True)


def _write(closure: cl.Closure, output: Path) -> None:
    """Write atomically (a reader never sees half a file), then print counts and checksum."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            sha = cl.write_closure(closure, fh)
        os.replace(tmp, output)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {output}: {e.strerror}") from None
    nodes, edges = closure.counts()
    click.echo(f"{output}: {nodes:,} nodes, {edges:,} edges")
    click.echo(f"sha256 of the sorted rows without header: {sha}")
