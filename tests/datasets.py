"""Small closures written on the fly for tests."""

from pathlib import Path


def write_tree_closure(path: Path, *, branching: int = 3, depth: int = 3) -> Path:
    """A complete tree's transitive closure as id1,id2,weight (hyponym, ancestor, 1)."""
    rows = []
    level = ["n"]
    parents = {"n": []}
    for _ in range(depth):
        nxt = []
        for p in level:
            for i in range(branching):
                c = f"{p}.{i}"
                parents[c] = [p] + parents[p]
                nxt.append(c)
        level = nxt
    for c, ancestors in parents.items():
        rows += [f"{c},{a},1" for a in ancestors]
    path.write_text("id1,id2,weight\n" + "\n".join(sorted(rows)) + "\n")
    return path
