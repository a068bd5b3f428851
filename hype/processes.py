"""Starting one of hype's modules in a fresh interpreter (the ranks of --workers, the first
run's compile helper), importing this checkout whatever the working directory holds."""

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
