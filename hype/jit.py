"""Calling a numba entry point so that one process compiles it and the others load it.

numba's on-disk cache (cache=True) lives beside the module, in hype/__pycache__, or in
NUMBA_CACHE_DIR when that is set; every process of a run (the ranks that --workers starts,
torchrun's ranks, concurrent test runs) reads the same one. numba itself takes no lock: on a
fresh clone, ranks that start together would each spend the whole compilation, racing to
write the same files. So the first call of an entry point in a process compiles (or loads)
its one signature under a file lock in that cache folder, one per entry point: the first
process compiles and writes the cache, the others wait, then load it, while processes that
need other entry points (pytest's workers, say) compile those at the same time. The lock is
held for the compilation only, never for the call itself, and a lock that cannot be had (a
read-only folder, a wait past LOCK_WAIT_S) only costs the duplicate compilation.
"""

from __future__ import annotations

import contextlib
import os

import filelock

LOCK_WAIT_S = 600.0  # longer than any compilation; past it, compile without the lock


def call(entry, *args):
    """entry(*args) for a numba dispatcher `entry`, prepared first (see prepare)."""
    prepare(entry, *args)
    return entry(*args)


def prepare(entry, *args) -> None:
    """Compile (or load from the cache) exactly the signature of `args`, under the entry's
    lock in the cache folder, unless this process has compiled `entry` already."""
    if not entry.signatures:
        sig = tuple(entry.typeof_pyval(a) for a in args)
        with _cache_lock(entry):
            entry.compile(sig)  # loads from the cache when another process wrote it


def cache_dir(entry) -> str | None:
    """The folder numba keeps `entry`'s cache in (None when it is not cached)."""
    cache = getattr(entry, "_cache", None)  # numba's Dispatcher; a NullCache has no folder
    return getattr(cache, "cache_path", None)


def lock_name(entry) -> str:
    """One lock per entry point: hype.kernels._pass_poincare.compile-lock."""
    func = entry.py_func
    return f"{func.__module__}.{func.__qualname__}.compile-lock"


@contextlib.contextmanager
def _cache_lock(entry):
    folder = cache_dir(entry)
    if folder is None:
        yield
        return
    try:
        os.makedirs(folder, exist_ok=True)
        lock = filelock.FileLock(os.path.join(folder, lock_name(entry)), timeout=LOCK_WAIT_S)
        lock.acquire()
    except (OSError, filelock.Timeout):
        yield  # compiling twice is slower, not wrong: numba writes its files atomically
        return
    try:
        yield
    finally:
        lock.release()
