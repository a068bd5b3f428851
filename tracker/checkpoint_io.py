"""Checkpoint files: written atomically, read back only as tensors and plain types."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from tracker import faults

TMP_SUFFIX = ".tmp"  # a save in progress: <name>.<random>.tmp, removed on start or resume


class CheckpointError(ValueError):
    """A file that is not a loadable hype checkpoint; the message names the file and why."""


def save_atomic(obj: dict, path: Path) -> int:
    """Write `obj` to a temporary file in the same folder, fsync, then rename over `path`.

    A crash leaves either the old file or the complete new one, never half of it. Returns bytes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        faults.point("save")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path.stat().st_size


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> dict:
    """Load with weights_only=True: a pickle payload is refused and never runs."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load (not plain tensors: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {msg})") from None
    if not isinstance(obj, dict) or "embeddings" not in obj or "names" not in obj:
        raise CheckpointError(f"{path}: not a hype checkpoint (no embeddings/names)")
    return obj


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete left-over partial saves (ours only: *.pth.<random>.tmp)."""
    removed = []
    for p in Path(directory).glob(f"*.pth.*{TMP_SUFFIX}"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
