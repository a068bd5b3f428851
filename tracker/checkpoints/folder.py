"""Which local folder holds run R's checkpoints: a hint is verified, never obeyed.

The run's ``hype.checkpoint_dir`` tag, an environment variable or a path from the store can
be edited by anyone who can write to the run. A folder is used for run R only when
- its manifest names R, or
- it has no manifest and is named after R (``<root>/<run_id>``: the layout of runs made
  before manifests); resume then binds it to R, cleanup keeps today's name rules for it.
Anything else is a one-line problem naming the folder and what was expected, and nothing in
that folder is read, uploaded or deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracker.checkpoints.manifest import Manifest, ManifestError, manifest_entry


@dataclass(frozen=True)
class RunFolder:
    folder: Path | None  # None: no usable local folder (nothing local to read or clean)
    manifest: Manifest | None  # the folder's manifest, naming the run
    legacy: bool = False  # no manifest, named after the run: a folder from before manifests
    problem: str | None = None  # why a hinted folder was not used; None when all is well
    note: str | None = None  # something worth a line that is not a problem


def verify(folder: Path, run_id: str) -> RunFolder:
    """``folder`` as run ``run_id``'s, or a RunFolder with a problem; reads only the manifest."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return RunFolder(None, None, problem=f"{folder} is not a plain directory; left alone")
    if manifest_entry(folder):
        try:
            return RunFolder(folder, Manifest.open(folder, run_id=run_id))
        except ManifestError as e:
            return RunFolder(None, None, problem=str(e))
    if not folder.exists():
        return RunFolder(None, None)
    if folder.name == run_id:
        return RunFolder(folder, None, legacy=True)
    return RunFolder(None, None, problem=(
        f"{folder} has no manifest and is not named after run {run_id}: nothing shows its files "
        "are the run's; left alone"))


def locate(run_id: str, *, hint: str | None, root: Path | None) -> RunFolder:
    """The run's folder from a hint (the tag) and the default ``root/<run_id>``.

    A verified hint wins. A hint that names a missing folder falls back to the default (a run
    trained on another machine); a hint that fails verification is a problem, even if the
    default exists, so that an edited tag is reported rather than worked around silently.
    """
    default = Path(root) / run_id if root is not None else None
    if hint:
        found = verify(Path(hint), run_id)
        if found.problem is not None or found.folder is not None:
            return found
        if default is None:
            return found
        again = verify(default, run_id)
        return RunFolder(again.folder, again.manifest, again.legacy, again.problem,
                         note=f"the run's folder {hint} is not on this machine; using {default}")
    if default is None:
        return RunFolder(None, None)
    return verify(default, run_id)
