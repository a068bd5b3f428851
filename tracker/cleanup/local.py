"""Local mode (``cleanup [--directory D]``): find what the trainer wrote, and the seed's flat files.

Looked at, in this order:
- D itself, when it holds a manifest: it is one run's folder;
- otherwise D's own files in the seed's two name formats (one flat target per model), and the
  run folders (with a manifest) directly under D and under D/checkpoints, where the trainer
  writes them (``checkpoints/<run_id>/``).
A subfolder with checkpoint-like files but no manifest is never treated as a run folder: it is
reported with the command that cleans it by name rules (``--directory`` on it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tracker.checkpoints.inventory import Skipped, models_in, scan_local
from tracker.checkpoints.manifest import MANIFEST_NAME, Manifest, ManifestError, manifest_entry
from tracker.cleanup.runs import CleanupError


@dataclass(frozen=True)
class Found:
    folder: Path
    manifest: Manifest | None  # None with a problem
    problem: str | None = None  # a damaged manifest, say


@dataclass
class Discovery:
    directory: Path
    run_folders: list[Found] = field(default_factory=list)
    flat_models: list[str] = field(default_factory=list)  # models with flat files directly in D
    skipped: list[Skipped] = field(default_factory=list)  # look-alikes in D
    unbound: list[Path] = field(default_factory=list)  # subfolders with checkpoints, no manifest
    looked: list[str] = field(default_factory=list)  # where we looked, for "nothing found"

    @property
    def empty(self) -> bool:
        return not (self.run_folders or self.flat_models)

    def nothing_found(self) -> str:
        where = "; ".join(self.looked)
        msg = (f"no checkpoints found. Looked in {where}, for files named <model>_epoch<N>.pth or "
               f"<model>.pth.<N>, and for run folders holding {MANIFEST_NAME}")
        if self.unbound:
            msg += (f". Folders with checkpoints but no manifest (clean each with --directory): "
                    f"{', '.join(str(p) for p in self.unbound[:5])}")
        return msg


def _open(folder: Path) -> Found:
    try:
        return Found(folder, Manifest.open(folder, run_id=None))
    except ManifestError as e:
        return Found(folder, None, str(e))


def _children(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def discover(directory: Path) -> Discovery:
    """List, never delete: raises CleanupError when D cannot be read at all."""
    directory = Path(directory)
    if not directory.exists():
        raise CleanupError(f"no such directory: {directory}")
    if directory.is_symlink() or not directory.is_dir():
        raise CleanupError(f"not a directory: {directory}")
    d = Discovery(directory)
    if manifest_entry(directory):
        d.looked.append(f"{directory} (a run folder)")
        d.run_folders.append(_open(directory))
        return d
    try:
        files, skipped = scan_local(directory)
    except OSError as e:
        raise CleanupError(f"cannot read directory {directory}: {e.strerror or e}") from None
    d.flat_models, d.skipped = models_in(files), skipped
    d.looked.append(str(directory))
    parents = [directory]
    nested = directory / "checkpoints"
    if nested.is_dir() and not nested.is_symlink():
        parents.append(nested)
    for parent in parents:
        d.looked.append(f"{parent}/*/")
        for child in _children(parent):
            if manifest_entry(child):
                d.run_folders.append(_open(child))
            elif child != nested:
                try:
                    has_ckpts = bool(scan_local(child)[0])
                except OSError:
                    has_ckpts = False
                if has_ckpts:
                    d.unbound.append(child)
    return d
