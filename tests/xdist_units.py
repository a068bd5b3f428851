"""How `make test` shares the test files between its two pytest-xdist processes.

A pytest plugin: tests/conftest.py imports its two hooks; `-p tests.xdist_units` loads it alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# `make test` runs on two processes (pytest-xdist). Each test file stays on one process, so that
# its module and session fixtures (servers, a PostgreSQL cluster, WordNet) are built once; the
# files whose tests create hype's shared memory segments (/dev/shm/hype-*) and check that none is
# left share one unit, so that no other test's segments appear in their before/after counts.
# The grouping is the scheduler's own (below), from each test's file: xdist's loadgroup marks
# no longer reach its node ids under pytest 9 (it sets Item._nodeid, which pytest 9 ignores), so
# under `--dist loadgroup` every file's tests were spread over both processes.
SHARED_MEMORY = frozenset({"test_distributed.py", "test_benchmarks_smoke.py",
                           "test_benchmarks_scale_smoke.py", "test_kernels.py"})
# The longest files, slowest first (`make test --durations`, 2026-12-03: 280 s down to 65 s of
# the suite's ~1,900): each process takes the next unit when it is free, so these go first and
# the many short files fill in at the end instead of one long file running alone.
LONGEST_FIRST = ("test_distributed.py", "test_resume.py", "test_kill_stress.py", "test_outage.py",
                 "test_scale_pg.py", "test_mlproject.py", "test_ui_browser.py", "test_serving.py",
                 "test_auth.py", "test_concurrency.py", "test_defaults.py", "test_wordnet.py")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the shared-memory unit."""
    path = nodeid.split("::", 1)[0]
    return "shared-memory" if Path(path).name in SHARED_MEMORY else path


def _start_order(item) -> int:
    name = item.path.name
    if name in SHARED_MEMORY:
        name = LONGEST_FIRST[0]
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    # Stable: the order within a file is kept. With --no-loadscope-reorder, this is the order in
    # which the units are handed out.
    items.sort(key=_start_order)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent when it is not installed
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return FileUnits(config, log)
