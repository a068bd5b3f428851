"""The first run's evaluator, compiled beside the run by a helper (hype.warmup)."""

import os
import subprocess
import sys
import time
from pathlib import Path

from hype import warmup

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict:
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}


def _python(cache: Path, code: str) -> str:
    out = subprocess.run([sys.executable, "-P", "-c", code], env=_env(cache), cwd=cache,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_helper_fills_an_empty_cache_that_the_run_then_loads(tmp_path):
    cache = tmp_path / "numba"
    cache.mkdir()
    check = "from hype import evaluate; print(evaluate.evaluator_cached('poincare'))"
    assert _python(cache, check) == "False"
    started = _python(cache, "from hype import warmup; h = warmup.start('poincare'); "
                             "print(h is not None); warmup.stop(h) if h is None else h.wait()")
    assert started == "True"
    # a fresh process finds it (one manifold's kernel, the one the run uses) and loads it: no
    # compilation, and nothing started
    loaded = _python(cache, "from hype import evaluate, warmup; "
                            "print(evaluate.evaluator_cached('poincare'), "
                            "evaluate.evaluator_cached('lorentz')); "
                            "evaluate.precompile('poincare'); s = evaluate._rank_poincare.stats; "
                            "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()), "
                            "warmup.start('poincare'))")
    assert loaded.splitlines() == ["True False", "1 0 None"]


def test_a_bad_manifold_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-P", "-m", "hype.warmup", "hyperbolic"],
                         env=_env(tmp_path), capture_output=True, text=True)
    assert out.returncode == 2
    assert "hyperbolic" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_helper_still_running_when_the_run_ends_is_stopped(monkeypatch):
    monkeypatch.setattr(warmup, "STOP_WAIT_S", 0.2)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    t0 = time.monotonic()
    warmup.stop(helper)
    assert helper.returncode is not None and helper.returncode != 0
    assert time.monotonic() - t0 < 10
    warmup.stop(None)  # nothing started: nothing to do


def test_a_finished_helper_is_reaped_without_waiting(monkeypatch):
    helper = subprocess.Popen([sys.executable, "-c", "pass"])
    helper.wait()
    monkeypatch.setattr(warmup, "STOP_WAIT_S", 60.0)
    t0 = time.monotonic()
    warmup.stop(helper)
    assert helper.returncode == 0 and time.monotonic() - t0 < 1



def test_a_cache_folder_that_cannot_be_made_is_not_warmed(tmp_path):
    from hype.evaluate import _writable

    assert _writable(str(tmp_path))
    assert _writable(str(tmp_path / "not" / "made" / "yet"))  # numba makes it
    (tmp_path / "a-file").write_text("")
    assert not _writable(str(tmp_path / "a-file"))
    assert not _writable(str(tmp_path / "a-file" / "numba"))
    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o500)
    # root writes through the mode bits; anyone else may not
    assert _writable(str(locked / "numba")) == (os.geteuid() == 0)
