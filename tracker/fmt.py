"""Small formatting helpers for what the tracker prints."""

from __future__ import annotations

from tqdm import tqdm

# Binary units (1 KB = 1024 bytes), as `ls -lh` and `du -h` count, so that our numbers match
# what users see when they check a folder by hand.
_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(n: int | None) -> str:
    """A short size for people: ``human_bytes(80_896) == "79 KB"``, ``1_258_291 -> "1.2 MB"``.

    One decimal below 10 units, none above (the extra digit is noise at that point).
    None (size unknown, e.g. a remote store that did not say) reads "unknown size".
    """
    if n is None:
        return "unknown size"
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"size must be an integer number of bytes >= 0, got {n!r}")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        text = f"{value:.1f}"
        if float(text) >= 10:  # 9.96 reads "10", not "10.0"
            text = f"{value:.0f}"
        # 1023.7 KB would round to "1024 KB": move up a unit instead.
        if float(text) < 1024 or unit == _UNITS[-1]:
            return f"{text} {unit}"
    raise AssertionError("unreachable")  # the loop returns at the last unit


def say(msg: str) -> None:
    """A line for the user, printed above any progress bar (tqdm keeps the bar below it)."""
    tqdm.write(msg)
