"""Checkpoint files: written atomically, read back only as tensors and plain types."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from hype import node_names, weights_only
from tracker import faults

TMP_SUFFIX = ".tmp"  # a save in progress: <name>.<random>.tmp, removed on start or resume


class CheckpointError(ValueError):
    """A file that is not a loadable hype checkpoint; the message names the file and why."""


def save_atomic(obj: dict, path: Path, *, before_replace=None) -> int:
    """Write `obj` to a temporary file in the same folder, fsync, then rename over `path`.

    A crash leaves either the old file or the complete new one, never half of it. Returns bytes.
    before_replace(tmp_path, sha256) runs once the bytes are durable and before the rename, with
    the hex SHA-256 of the bytes written: the trainer records the file in the run's manifest
    there, so that no complete checkpoint ever exists that the run's own records do not name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            out = _HashingWriter(f)
            _save_without_crc32(obj, out)
            f.flush()
            os.fsync(f.fileno())
        faults.point("save")
        if before_replace is not None:
            before_replace(Path(tmp), out.hexdigest())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path.stat().st_size


class _HashingWriter:
    """A write-only stream that hashes what it passes on: the checkpoint's SHA-256 without
    reading the file back (7.5 MB per noun epoch, 200 MB for the largest runs' checkpoints).
    torch.save writes its zip archive front to back, through write() and flush() alone."""

    def __init__(self, f):
        self._f, self._h = f, hashlib.sha256()

    def write(self, b) -> int:
        self._h.update(b)
        return self._f.write(b)

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _save_without_crc32(obj: dict, f) -> None:
    """torch.save without the zip records' CRC-32: torch.load never checks it (a flipped byte
    loads), and the run's records hold each file's SHA-256, which resume and retention check.
    It was 3 of the 5.3 ms a 7.5 MB noun checkpoint took to save, on the uploader's thread."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(obj, f)
    finally:
        torch.serialization.set_crc32_options(before)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# torch.save writes a zip archive (since torch 1.6); older files start with a pickle protocol byte.
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80")


def load(path: Path) -> dict:
    """Load with weights_only=True: a pickle payload is refused and never runs."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith(_TORCH_HEADERS):
            # torch would parse any other bytes as a pickle and call it "unsafe": say what it is
            what = "an empty file" if not head else f"it starts with {head!r}"
            raise CheckpointError(f"{path}: not a readable checkpoint (not written by torch.save: {what})")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {weights_only.refusal(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, IndexError) as e:
        msg = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {msg})") from None
    if not isinstance(obj, dict) or "embeddings" not in obj or "names" not in obj:
        raise CheckpointError(f"{path}: not a hype checkpoint (no embeddings/names)")
    try:
        obj["names"] = node_names.decode(obj["names"])
    except (UnicodeDecodeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a hype checkpoint (unreadable node names: {e})") from None
    return obj


PROBE_NAME = ".hype-size-probe.pth"  # the disk guard's one measuring save
# mkstemp's temporary names: <target>.<8 random characters>.tmp
_TMP_RE = re.compile(r"(?P<target>.+)\.[A-Za-z0-9_]{8}" + re.escape(TMP_SUFFIX))


def remove_temporaries(directory: Path, model: str) -> list[Path]:
    """Delete left-over partial saves of this run's own files only: a checkpoint of ``model``,
    its final model, the disk guard's probe, or a manifest a kill stopped before it was renamed
    into place. Any other *.tmp (results.pth.v1.tmp, say) is not ours and stays."""
    from tracker.checkpoints.manifest import MANIFEST_NAME
    from tracker.policy.names import final_name, parse_checkpoint_name

    ours = {final_name(model), PROBE_NAME, f".{MANIFEST_NAME}"}
    removed = []
    for p in sorted(Path(directory).iterdir()):
        m = _TMP_RE.fullmatch(p.name)
        if m is None or not p.is_file() or p.is_symlink():
            continue
        target = m.group("target")
        parsed = parse_checkpoint_name(target)
        if target in ours or (parsed is not None and parsed.model == model):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@dataclass(frozen=True)
class Written:
    """A file as this process left it after writing and hashing it: the same inode, unchanged
    since. Any write, truncation, rename onto it, chmod or utime moves its ctime, which no user
    can set, so a file that still shows all five is the bytes that were hashed (git's index skips
    rehashing on the same test). Lets the trainer's retention prove an old checkpoint is its own
    without reading it again (7.5 MB of SHA-256 per noun epoch, ~5 ms). Where the kernel keeps
    coarse timestamps, a write in the same tick as the stat could go unseen; what passes is then
    still the inode this process created at the run's own name, never another run's file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Written:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def at(cls, path: Path) -> Written:
        return cls.of(os.lstat(path))


def not_the_recorded(path: Path, size: int | None, sha256: str | None, *,
                     written: Written | None = None) -> str | None:
    """Why ``path`` is not the file a record names (a regular file, never a link, of that size
    and sha256; None checks nothing), or None when it is. FileNotFoundError when it is gone.
    ``written``: how this process left the file once it had hashed it to ``sha256``; a file
    still exactly so needs no rehash, any other is hashed."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if size is not None and st.st_size != size:
        return f"{st.st_size} bytes, the records say {size}"
    if sha256 is not None and Written.of(st) != written and sha256_of(path) != sha256:
        return "its sha256 differs from the manifest's"
    return None


def sha256_of(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read back from the page cache right after a save)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
