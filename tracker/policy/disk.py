"""Will the retained checkpoints fit? Measured from one real save, decided by a pure function."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tracker.checkpoints.files import PROBE_NAME, save_atomic
from tracker.fmt import human_bytes


@dataclass(frozen=True)
class DiskEstimate:
    checkpoint_bytes: int  # size of one checkpoint, from a real save of the current state
    retained_bytes_max: int  # most this run keeps on disk at once: (keep + 2) checkpoints
    free_bytes: int  # free space in the checkpoint folder's file system
    margin_bytes: int  # space that must stay free after the retained set
    ok: bool
    message: str


def free_bytes(path: Path) -> int:
    """Free space where `path` lives (the query tests monkeypatch)."""
    return shutil.disk_usage(path).free


def estimate(checkpoint_bytes: int, *, keep: int | None, epochs: int, free: int, margin: int,
             held_bytes: int = 0) -> DiskEstimate:
    """Pure: keep + 2 counts the newest N, the best and the final model (plus the one being
    written before the oldest is deleted is covered by the final model's slot until the end).
    keep=None keeps every epoch. held_bytes: checkpoints of this run already on disk (resume)."""
    count = (epochs + 1) if keep is None else keep + 2
    retained = count * checkpoint_bytes
    need = max(retained - held_bytes, 0)
    ok = free - need >= margin
    if ok:
        msg = (f"Disk: a checkpoint is {human_bytes(checkpoint_bytes)}; this run keeps at most "
               f"{human_bytes(retained)} ({count} files); {human_bytes(free)} free")
    else:
        msg = (f"not enough disk for the checkpoints: {count} files of {human_bytes(checkpoint_bytes)} "
               f"need {human_bytes(need)} more, {human_bytes(free)} free, and "
               f"{human_bytes(margin)} must stay free (--disk-margin). Lower --keep-checkpoints, "
               f"free space, choose another --checkpoint-dir, or pass --force")
    return DiskEstimate(checkpoint_bytes, retained, free, margin, ok, msg)


def measure_checkpoint(state_dict: dict, directory: Path) -> int:
    """Size of one checkpoint, by saving it (atomically, as the run will) and removing it."""
    probe = Path(directory) / PROBE_NAME
    try:
        return save_atomic(state_dict, probe)
    finally:
        probe.unlink(missing_ok=True)
