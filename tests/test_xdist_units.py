"""`make test`'s two processes share the files as tests/xdist_units.py says: a real pytest-xdist run
of five small files, each test recording which process ran it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.xdist_units import work_unit

ROOT = Path(__file__).resolve().parents[1]
TEST_BODY = """
import os, time

def _record(name):
    time.sleep(0.05)  # long enough that both processes are handed work
    with open(os.environ["UNITS_LOG"], "a") as log:
        log.write(f"{os.path.basename(__file__)} {name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
""" + "".join(f"\ndef test_{i}():\n    _record('test_{i}')\n" for i in range(5))
FILES = ("test_a.py", "test_b.py", "test_kernels.py", "test_c.py", "test_distributed.py")


def test_each_file_runs_on_one_process_and_the_shared_memory_files_on_the_same(tmp_path):
    for name in FILES:
        (tmp_path / name).write_text(TEST_BODY)
    log = tmp_path / "units.log"
    env = {**os.environ, "UNITS_LOG": str(log), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadscope",
         "--no-loadscope-reorder", "-p", "tests.xdist_units", "-p", "no:cacheprovider", *FILES],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 5 * len(FILES)
    workers = defaultdict(set)
    for name, _, worker in lines:
        workers[name].add(worker)
    assert all(len(w) == 1 for w in workers.values()), dict(workers)  # no file split
    assert workers["test_kernels.py"] == workers["test_distributed.py"]
    assert len(set().union(*workers.values())) == 2  # both processes worked
    # the longest unit (the shared-memory files) was handed out first, though collected later
    (first_worker,) = workers["test_distributed.py"]
    ran_there = [name for name, _, worker in lines if worker == first_worker]
    assert set(ran_there[:10]) == {"test_kernels.py", "test_distributed.py"}


def test_units_are_files_except_the_shared_memory_group():
    assert work_unit("tests/test_resume.py::test_x[a::b]") == "tests/test_resume.py"
    assert work_unit("tests/test_kernels.py::test_y") == work_unit("tests/test_distributed.py::t")
