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

An argument wrapped in Constant is compiled as a literal: the compiled code knows its value
(hype.kernels passes small embedding dimensions so, and LLVM unrolls the loops over them),
at the price of one compilation per value. call() then calls exactly the signature it
prepared, since numba's dispatcher would type the plain value as int64 and compile again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import filelock
from numba.core import types

LOCK_WAIT_S = 600.0  # longer than any compilation; past it, compile without the lock


@dataclasses.dataclass(frozen=True)
class Constant:
    """An argument compiled as a literal (see the module's docstring): an int or a bool."""

    value: int


def call(entry, *args):
    """entry(*args) for a numba dispatcher `entry`, through the overload prepare() made."""
    sig = prepare(entry, *args)
    return entry.overloads[sig].entry_point(*(a.value if isinstance(a, Constant) else a
                                              for a in args))


def prepare(entry, *args) -> tuple:
    """Compile (or load from the cache) exactly the signature of `args`, under the entry's
    lock in the cache folder, unless this process has it already. Returns the signature."""
    sig = tuple(types.literal(a.value) if isinstance(a, Constant) else entry.typeof_pyval(a)
                for a in args)
    if sig not in entry.overloads:
        with _cache_lock(entry):
            entry.compile(sig)  # loads from the cache when another process wrote it
    return sig


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
