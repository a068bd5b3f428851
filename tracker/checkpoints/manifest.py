"""The run's manifest: the one record of which files in a checkpoint folder are run R's.

A small SQLite file in the folder (``hype_manifest.sqlite``), written through SQLAlchemy, so
that the trainer and a ``cleanup --include-running`` can update it at the same time (SQLite
serialises the writers; each update is one transaction). It holds:
- the binding: run id, tracking store (credentials redacted), model name, monitored metric;
- one row per checkpoint: epoch, file name, size, sha256, state, and the monitored value.

States: ``written`` (saved locally, upload not confirmed), ``stored`` (the tracking store
lists it with the same size), ``deleted`` (a deleter decided it goes; the row stays, so an
interrupted deletion is finished, not undone by a re-upload).

Creation is atomic: the schema and the binding are written to a temporary file that is then
renamed into place, so a folder has either no manifest or a complete one. Every path that
acts on a folder (resume, cleanup) opens it with the run id it expects; a manifest that names
another run, or that is damaged, is a one-line ManifestError and nothing in the folder is used.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import (
    URL,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool

from tracker.store.redact import redact

MANIFEST_NAME = "hype_manifest.sqlite"
FORMAT = "1"  # bumped when the schema changes; an unknown format is refused, not guessed at
State = Literal["written", "stored", "deleted"]
STATES = ("written", "stored", "deleted")

_meta = MetaData()
_binding = Table("binding", _meta, Column("key", String, primary_key=True), Column("value", String))
_checkpoints = Table(
    "checkpoints", _meta,
    Column("epoch", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("sha256", String, nullable=True),  # None only for a copy known from the store alone
    Column("state", String, nullable=False),
    Column("value", Float, nullable=True),  # the monitored metric at this epoch, if evaluated
    Column("updated", Float, nullable=False),  # unix time of the last change
)


class ManifestError(ValueError):
    """A folder's manifest is missing, damaged, or names another run; one line, with the path."""


@dataclass(frozen=True)
class Entry:
    epoch: int
    name: str  # file name in the folder and in the tracked folder
    size: int  # bytes
    sha256: str | None  # hex digest of the file's bytes
    state: State
    value: float | None = None  # monitored metric at this epoch


@dataclass(frozen=True)
class Binding:
    run_id: str
    tracking_uri: str  # redacted; credentials come from the environment
    model_name: str
    monitor: str
    mode: str  # "max" or "min"


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST_NAME


def has_manifest(folder: Path) -> bool:
    p = manifest_path(folder)
    return p.is_file() and not p.is_symlink()


def manifest_entry(folder: Path) -> bool:
    """Whether anything is at the manifest's name, a link included: such a folder is treated as
    a run folder, and a linked or damaged manifest is refused by ``Manifest.open``, not skipped."""
    p = manifest_path(folder)
    return p.exists() or p.is_symlink()


def _wal(cur, *, wait_s: float = 30.0) -> None:
    """Switch the file to WAL (a mode the file keeps; its -wal/-shm go when the last connection
    closes). Switching needs the file alone and SQLite answers "locked" at once, without its busy
    wait, when another process holds it: so look first (most opens find it switched already),
    then retry for a while."""
    deadline = time.monotonic() + wait_s
    while True:
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _engine(path: Path, *, pooled: bool = False):
    """An engine for the manifest file. URL.create: a "?" or "%" in the folder's path must stay
    part of the path, not become a query string.

    pooled: keep one connection open between calls (the trainer updates its manifest several
    times an epoch; opening the file each time cost ~10 ms per epoch). No transaction stays
    open between calls, so no lock is held between two epochs: a cleanup can write meanwhile.
    WAL with synchronous=NORMAL: a commit survives a killed process; readers never block.
    """
    url = URL.create("sqlite", database=str(path))
    engine = create_engine(url, poolclass=StaticPool if pooled else NullPool,
                           connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cur = dbapi_connection.cursor()
        if pooled:  # one-off connections keep the file's mode (switching it needs it alone)
            _wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _row_problem(r, model: str) -> str | None:
    from tracker.policy.names import parse_checkpoint_name

    epoch, name, size = r["epoch"], r["name"], r["size"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch {epoch!r}"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"size {size!r} of epoch {epoch}"
    parsed = parse_checkpoint_name(name) if isinstance(name, str) else None
    if parsed is None or parsed.epoch != epoch or parsed.model != model:
        return f"name {name!r} is not model {model!r}'s checkpoint of epoch {epoch}"
    if r["value"] is not None and not isinstance(r["value"], int | float):
        return f"value {r['value']!r} of epoch {epoch}"
    return None


class Manifest:
    """One folder's manifest. Construct with ``create`` or ``open``."""

    def __init__(self, path: Path, binding: Binding):
        self.path, self.binding = path, binding
        self.folder = path.parent
        self._engine = _engine(path, pooled=True)

    @property
    def run_id(self) -> str:
        return self.binding.run_id

    def close(self) -> None:
        """Close the kept connection: the folder then holds the manifest file alone."""
        self._engine.dispose()

    @classmethod
    def create(cls, folder: Path, binding: Binding) -> Manifest:
        """Bind ``folder`` to a run; if it already has a manifest, open it for that run."""
        folder = Path(folder)
        if manifest_path(folder).exists():
            return cls.open(folder, run_id=binding.run_id)
        binding = Binding(binding.run_id, redact(binding.tracking_uri), binding.model_name,
                          binding.monitor, binding.mode)
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            engine = _engine(Path(tmp))
            with engine.begin() as conn:
                _meta.create_all(conn)
                rows = {"format": FORMAT, "run_id": binding.run_id, "tracking_uri": binding.tracking_uri,
                        "model_name": binding.model_name, "monitor": binding.monitor, "mode": binding.mode}
                conn.execute(insert(_binding), [{"key": k, "value": v} for k, v in rows.items()])
            engine.dispose()
            try:  # another process may bind the folder at the same moment: first one wins
                os.link(tmp, manifest_path(folder))
            except FileExistsError:
                return cls.open(folder, run_id=binding.run_id)
            except OSError as e:  # a file system without hard links: rename, if still free
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                if manifest_path(folder).exists():
                    return cls.open(folder, run_id=binding.run_id)
                os.replace(tmp, manifest_path(folder))
        finally:
            Path(tmp).unlink(missing_ok=True)
        return cls(manifest_path(folder), binding)

    @classmethod
    def open(cls, folder: Path, *, run_id: str | None) -> Manifest:
        """The manifest of ``folder``; with ``run_id``, only if it names that run."""
        path = manifest_path(folder)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ManifestError(f"{path}: not a regular file; a manifest is never followed through a link")
        if not path.is_file():
            raise ManifestError(f"{folder}: no {MANIFEST_NAME}, so nothing shows the folder is "
                                f"{'run ' + run_id + chr(39) + 's' if run_id else 'a run'}")
        try:
            engine = _engine(path)
            with engine.connect() as conn:
                rows = dict(conn.execute(select(_binding.c.key, _binding.c.value)).all())
            engine.dispose()
        except SQLAlchemyError as e:
            why = str(getattr(e, "orig", e)).splitlines()[0]
            raise ManifestError(f"{path}: damaged manifest ({why}); nothing in {folder} was used") from None
        missing = [k for k in ("format", "run_id", "model_name") if not rows.get(k)]
        if missing:
            raise ManifestError(f"{path}: half-written manifest (no {', '.join(missing)}); "
                                f"nothing in {folder} was used")
        if rows["format"] != FORMAT:
            raise ManifestError(f"{path}: manifest format {rows['format']!r}, this hype reads {FORMAT!r}")
        if run_id is not None and rows["run_id"] != run_id:
            raise ManifestError(f"{folder} belongs to run {rows['run_id']} (its manifest), "
                                f"not to run {run_id}; nothing in it was used")
        return cls(path, Binding(rows["run_id"], rows.get("tracking_uri", ""), rows["model_name"],
                                 rows.get("monitor", "map"), rows.get("mode", "max")))

    def entries(self) -> dict[int, Entry]:
        """{epoch: entry} for every row, deleted ones included."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(_checkpoints)).mappings().all()
        except SQLAlchemyError as e:
            raise ManifestError(f"{self.path}: cannot read the manifest "
                                f"({str(getattr(e, 'orig', e)).splitlines()[0]})") from None
        out = {}
        for r in rows:
            problem = _row_problem(r, self.binding.model_name)
            if problem:
                raise ManifestError(f"{self.path}: damaged manifest row ({problem}); nothing in "
                                    f"{self.folder} was used")
            state = r["state"] if r["state"] in STATES else "written"  # unknown: assume least
            value = None if r["value"] is None else float(r["value"])
            out[r["epoch"]] = Entry(r["epoch"], r["name"], r["size"], r["sha256"], state, value)
        return out

    def record(self, entry: Entry) -> None:
        """Insert or replace the row of ``entry.epoch`` (one transaction)."""
        if entry.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {entry.state!r}")
        problem = _row_problem({"epoch": entry.epoch, "name": entry.name, "size": entry.size,
                                "value": entry.value}, self.binding.model_name)
        if problem:
            raise ValueError(f"not a row of this manifest: {problem}")
        row = {"epoch": entry.epoch, "name": entry.name, "size": entry.size, "sha256": entry.sha256,
               "state": entry.state, "value": entry.value, "updated": time.time()}
        with self._engine.begin() as conn:
            conn.execute(_checkpoints.delete().where(
                (_checkpoints.c.epoch == entry.epoch) | (_checkpoints.c.name == entry.name)))
            conn.execute(insert(_checkpoints), [row])

    def set_state(self, epoch: int, state: State) -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        with self._engine.begin() as conn:
            conn.execute(_checkpoints.update().where(_checkpoints.c.epoch == epoch)
                         .values(state=state, updated=time.time()))

    def forget(self, epoch: int) -> None:
        """Drop a row whose file is gone from both sides: nothing is left to account for."""
        with self._engine.begin() as conn:
            conn.execute(_checkpoints.delete().where(_checkpoints.c.epoch == epoch))
