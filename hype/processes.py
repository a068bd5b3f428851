"""Starting one of hype's modules in a fresh interpreter (the ranks of --workers, the first
run's compile helper), importing this checkout whatever the working directory holds; and the
cores those processes share."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # makes `python -m hype.<module>` importable


def module_command(module: str, *args: str) -> list[str]:
    """`python -P -m module args...`: -P because `-m` would put the working directory first on
    sys.path, and a process started from a folder holding another checkout would run that
    one's code (and use its numba cache)."""
    return [sys.executable, "-P", "-m", module, *args]


def module_env() -> dict[str, str]:
    """This process's environment with this checkout first on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)}


def launched_by_torchrun() -> bool:
    """Whether torchrun (or a launcher setting its env:// variables) started this process as
    one rank of several; light, so that the CLI can ask before it imports torch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ranks_on_this_host(workers: int) -> int:
    """How many of a run's ``workers`` ranks share this machine's cores: torchrun's
    LOCAL_WORLD_SIZE when it launched us (a multi-node run has only some of them here), else all
    of them (--workers spawns every rank on this host)."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "") if launched_by_torchrun() else ""
    return int(local) if local.isdigit() and int(local) > 0 else workers


def fill_cores(ranks_here: int, cores: int) -> bool:
    """Whether ``ranks_here`` ranks, each training on one core, leave none of ``cores`` free:
    then anything else in rank 0's process (torch's thread pool, the uploader) runs on a core
    a rank needs."""
    return ranks_here >= cores


def torch_threads(ranks_here: int, cores: int) -> int | None:
    """torch's intra-op threads for a rank when ``ranks_here`` ranks share ``cores``: 1 once they
    take every core, else None (torch's default). The ranks train with single-threaded numba; a
    parallel torch op in rank 0 (the epoch's snapshot, a checkpoint's save) could only take a
    core from another rank, and its OpenMP worker spins after each op: 1.4% of a core in a
    tracked noun run on 2 cores, at normal priority (docs/performance.md, "Session 14")."""
    return 1 if fill_cores(ranks_here, cores) else None
