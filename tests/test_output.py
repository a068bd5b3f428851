"""What `train` writes when its output goes to a file (`make train > log 2>&1`): plain lines, one
per checkpoint event and a progress line now and then; no bar repaints, no MLflow warnings, no
download bars, MLflow's "View run" link once. And the progress helper that every bar uses."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from hype.progress import LineProgress, LineSchedule, bar, progress_line
from tests.datasets import write_tree_closure

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 6
SAVED = re.compile(r"Checkpoint saved: tree_epoch(\d{4})\.pth \(keeping \d+: .*\)")
DELETED = re.compile(r"Deleted old checkpoint: tree_epoch(\d{4})\.pth \(.*\)")
PROGRESS = re.compile(rf"epoch (\d+)/{EPOCHS} loss \d+\.\d{{4}}( \w+ \d+\.\d{{3}})* \(\d+\.\d s\)")


def train_into_a_file(tmp_path: Path, uri: str, experiment: str) -> str:
    """`python cli.py train`, stdout and stderr into one file (no terminal): the file's text."""
    dataset = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    log = tmp_path / "train.log"
    # no MLFLOW_* settings from the caller's shell, no PYTHONUNBUFFERED: as `make train > log`
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k != "PYTHONUNBUFFERED"}
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", "--dataset", str(dataset),
           "--epochs", str(EPOCHS), "--dim", "2", "--keep-checkpoints", "2",
           "--tracking-uri", uri, "--experiment", experiment,
           "--checkpoint-dir", str(tmp_path / "ck")]
    with open(log, "wb") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
                              timeout=300)
    data = log.read_bytes()
    assert done.returncode == 0, data.decode(errors="replace")
    assert b"\r" not in data, "a progress bar repainted itself into the log"
    assert len(data) < 5_000, f"{len(data)} bytes for {EPOCHS} epochs:\n{data.decode()}"
    return data.decode()


def check_plain_lines(text: str) -> None:
    lines = text.splitlines()
    assert not [ln for ln in lines if "Warning" in ln or "WARNING" in ln], text
    assert "Downloading artifacts" not in text
    assert text.count("View run") <= 1, text
    # one line per checkpoint event: each epoch saved once, each deletion once
    saved = [int(m.group(1)) for ln in lines if (m := SAVED.fullmatch(ln))]
    deleted = [int(m.group(1)) for ln in lines if (m := DELETED.fullmatch(ln))]
    assert saved == list(range(1, EPOCHS + 1)), text
    assert deleted and len(deleted) == len(set(deleted)) and set(deleted) < set(saved), text
    assert sum("Checkpoint saved" in ln for ln in lines) == len(saved), text
    assert sum("Deleted old checkpoint" in ln for ln in lines) == len(deleted), text
    # progress: plain lines, the last one for the last epoch, after the run's first line
    progress = [int(m.group(1)) for ln in lines if (m := PROGRESS.fullmatch(ln))]
    assert progress and progress[-1] == EPOCHS and progress == sorted(set(progress)), text
    first_run_line = next(i for i, ln in enumerate(lines) if ln.startswith("MLflow run "))
    assert first_run_line < next(i for i, ln in enumerate(lines) if PROGRESS.fullmatch(ln))


def test_train_into_a_log_file_writes_plain_lines(tmp_path, _migrated_sqlite_db):
    shutil.copy(_migrated_sqlite_db, tmp_path / "mlflow.db")
    text = train_into_a_file(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "output")
    check_plain_lines(text)
    assert "Final model (epoch " in text  # the pyfunc model was logged: no --no-pyfunc


def test_a_server_run_prints_its_view_run_link_once(tmp_path, mlflow_server_proxied):
    """On a tracking server MLflow prints "View run ... at:" whenever a run ends: hype's log of
    the pyfunc model (start_run/end_run) must not add a second one to the run's own end."""
    text = train_into_a_file(tmp_path, mlflow_server_proxied.url, "output-view-run")
    check_plain_lines(text)
    assert text.count("View run") == 1 and text.count("View experiment at:") == 1, text
    assert f"at: {mlflow_server_proxied.url}/#/experiments/" in text


# --- the progress helper -------------------------------------------------------------------


@pytest.mark.parametrize("schedule, n, elapsed, due", [
    (LineSchedule(300, every_s=10, every_fraction=0.1), 1, 1.0, False),
    (LineSchedule(300, every_s=10, every_fraction=0.1), 30, 1.0, True),  # 10% of 300
    (LineSchedule(300, every_s=10, every_fraction=0.1), 31, 10.0, True),  # 10 s since the start
    (LineSchedule(300, every_s=10, every_fraction=0.1, last_n=30, last_s=5.0), 59, 14.9, False),
    (LineSchedule(300, every_s=10, every_fraction=0.1, last_n=35, last_s=5.0), 60, 6.0, True),
    (LineSchedule(300, every_s=10, every_fraction=0.1, last_n=30, last_s=5.0), 30, 99.0, False),
    (LineSchedule(6, every_s=10, every_fraction=0.1), 1, 0.1, True),  # 10% of 6 rounds to 1
    (LineSchedule(120, every_s=10), 119, 9.9, False),  # no fraction: time alone
    (LineSchedule(None, every_s=10, every_fraction=0.1), 500, 10.0, True),  # no total
    (LineSchedule(None, every_s=None, every_fraction=0.1), 500, 99.0, False),
])
def test_line_schedule(schedule, n, elapsed, due):
    assert schedule.due(n, elapsed) is due


def test_progress_line_format():
    assert progress_line("epoch", 40, 300, {"loss": "0.1234", "map": "0.912"}, 12.34) == \
        "epoch 40/300 loss 0.1234 map 0.912 (12.3 s)"
    assert progress_line("nouns", 7, None, {}, 0.0) == "nouns 7 (0.0 s)"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_line_progress_writes_every_tenth_and_every_ten_seconds():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(total=20, initial=0, label="epoch", every_s=10, every_fraction=0.1,
                     last_line=True, file=out, clock=clock)
    for epoch in range(1, 8):
        clock.now += 0.5 if epoch != 3 else 20  # epoch 3 takes 20 s
        p.set_postfix(loss=f"{epoch / 10:.4f}")
        p.update()
    p.close()  # stopped early at 7 of 20: the last line names epoch 7
    assert out.getvalue().splitlines() == [
        "epoch 2/20 loss 0.2000 (1.0 s)",
        "epoch 3/20 loss 0.3000 (21.0 s)",
        "epoch 4/20 loss 0.4000 (21.5 s)",
        "epoch 6/20 loss 0.6000 (22.5 s)",
        "epoch 7/20 loss 0.7000 (23.0 s)",
    ]


def test_line_progress_resumed_and_iterated():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(range(3), total=10, initial=7, label="epoch", every_fraction=0.1,
                     last_line=True, file=out, clock=clock)
    assert list(p) == [0, 1, 2]
    p.close()  # the last count already has its line: no second one
    assert out.getvalue().splitlines() == [f"epoch {n}/10 (0.0 s)" for n in (8, 9, 10)]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_is_tqdm_on_a_terminal_and_lines_elsewhere():
    on_tty = bar(total=5, desc="train", unit="epoch", file=Terminal())
    assert isinstance(on_tty, tqdm) and not on_tty.disable
    on_tty.close()
    in_a_file = bar(total=5, desc="train", unit="epoch", label="epoch", file=io.StringIO())
    assert isinstance(in_a_file, LineProgress) and in_a_file.label == "epoch"
    for stream in (Terminal(), io.StringIO()):
        off = bar(total=5, desc="train", unit="epoch", enabled=False, file=stream)
        off.update()
        off.close()
        assert isinstance(off, tqdm) and off.disable and stream.getvalue() == ""
