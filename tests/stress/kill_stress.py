"""Kill -9 stress: SIGKILL tracked training at random moments, resume until it finishes, check.

    .venv/bin/python -m tests.stress.kill_stress --trials 20            # embedded SQLite store
    .venv/bin/python -m tests.stress.kill_stress --trials 20 --server   # proxied `mlflow server`

A trial trains a small closure (`python cli.py train`, keep N) and kills it: either at a fault
point (HYPE_FAULT=<point>:<n>, see tracker/faults.py) or from outside with SIGKILL after a random
delay. Then it resumes the run (and may kill a resumed process again) until a process exits 0.
The first kill of trial i is of kind KINDS[i % 6], so 24 trials try every kind 4 times
("queued": the checkpoint handed to the uploader, maybe not saved yet).

After each trial:
- every retained checkpoint loads, locally and downloaded from the store, and so does the
  final model (local <model>.pth and tracked hype_model/<model>.pth, same size);
- the local epoch checkpoints equal TrackedCheckpoints.list() (names and sizes), and no
  partial save (*.tmp) is left;
- the retained epochs are the newest N (plus the best epoch with --keep-best);
- a watcher thread polled the run's folder every few ms. In every snapshot, counting complete
  epoch checkpoints, their partial saves and the disk guard's size probe: anything beyond the
  newest N+1 must be a single epoch that was the run's best at some point, and only with
  keep-best. The final model is counted apart (max_final); `max_files` is everything.

Kills before the run's first checkpoint is stored are not drawn: such a run has nothing to
resume from, and resume says so (`run ... has no retained checkpoint to resume from`).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from commands.train import STORE_EVERY_ENV
from tests.datasets import write_tree_closure
from tracker import faults, layout
from tracker.checkpoints.files import CheckpointError, load
from tracker.checkpoints.manifest import Manifest, ManifestError
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.policy import names
from tracker.policy.stopping import StopState, dedupe, fold
from tracker.training.callbacks import TrackerConfig

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = "external"
KINDS = (*faults.POINTS, EXTERNAL)
MODEL = "tree"  # write_tree_closure's file is tree.csv, so checkpoints are tree_epochNNNN.pth
PROCESS_TIMEOUT_S = 300.0
MAX_PROCESSES = 8  # per trial: the first run plus resumes
_TMP_RE = re.compile(r"(?P<target>.+\.pth)\.[A-Za-z0-9_]+\.tmp")
PROBE = ".hype-size-probe.pth"  # tracker.diskguard saves one checkpoint to measure it


@dataclass(frozen=True)
class Settings:
    epochs: int = 30
    keep: int = 3
    keep_best: bool = True
    eval_every: int = 2
    burnin: int = 2
    # the default at the bound: waiting checkpoints only newest N keeps are replaced by newer
    # ones (tracker.policy.supersede); False: every epoch's checkpoint is stored
    supersede: bool = False
    # training processes: with as many as cores the uploader yields them and is paced
    # (tracker.training.uploader), so most checkpoints are replaced between its jobs
    workers: int = 1

    def env(self) -> dict:
        env = dict(os.environ)
        env.pop(STORE_EVERY_ENV, None)
        if not self.supersede:
            env[STORE_EVERY_ENV] = "1"
        return env

    def train_args(self) -> list[str]:
        # patience far beyond the epochs: every run ends at `epochs`, so the newest N are known
        return ["--epochs", str(self.epochs), "--keep-checkpoints", str(self.keep),
                "--keep-best", "1" if self.keep_best else "0",
                "--eval-every", str(self.eval_every), "--burnin", str(self.burnin),
                "--patience", "1000", "--dim", "2", "--negs", "5", "--lr", "1.0",
                "--no-pyfunc", "--quiet", "--force", "--workers", str(self.workers)]


@dataclass(frozen=True)
class Kill:
    kind: str  # a fault point (tracker.faults.POINTS) or EXTERNAL
    n: int = 0  # fault point: die the n-th time this process reaches it
    delay_s: float = 0.0  # external: seconds after the trigger
    after_checkpoint: bool = True  # external: trigger on the first "Checkpoint saved", else the start

    def __str__(self) -> str:
        if self.kind != EXTERNAL:
            return f"{self.kind}:{self.n}"
        return f"{EXTERNAL}@{'ckpt' if self.after_checkpoint else 'start'}+{self.delay_s:.2f}s"


def draw_kill(rng: random.Random, kind: str, s: Settings, *, first: bool, epochs_left: int) -> Kill:
    """A kill of `kind` that this process should reach. Saves count the disk guard's probe (#1)
    and the final model (#epochs_left + 2); a first process must store one checkpoint first."""
    left = max(epochs_left, 1)
    if s.supersede and kind in ("save", "upload", "delete"):
        # most of these tiny epochs' checkpoints are replaced: a process stores only a few
        left = min(left, 3)
    if kind == "save":
        return Kill(kind, rng.randint(3 if first else 1, left + 2))
    if kind == "epoch":
        return Kill(kind, rng.randint(2 if first else 1, left))
    if kind in ("upload", "queued"):
        return Kill(kind, rng.randint(1, left))
    if kind == "delete":  # deletes start once N are stored; resume may delete one at once
        return Kill(kind, rng.randint(1, max(left - s.keep, 1)))
    # external: in training (after a "Checkpoint saved" line), or for a resume, counted from its
    # start so that it may land in resuming (reconcile, re-upload, retention) or in finishing
    if first or rng.random() < 0.5:
        return Kill(kind, delay_s=rng.uniform(0.0, 0.12 * left))
    return Kill(kind, delay_s=rng.uniform(2.5, 8.0), after_checkpoint=False)


# --- watching the run's folder ------------------------------------------------------------


@dataclass
class Snapshot:
    epochs: tuple[int, ...]  # epoch of each epoch-checkpoint file (complete or partial), sorted
    probes: int  # disk-guard size probes (a full checkpoint each)
    final: int  # final model files (complete or partial)
    total: int  # every file


def snapshot(root: Path, model: str = MODEL) -> Snapshot:
    epochs, probes, final, total = [], 0, 0, 0
    for _dirpath, _dirs, files in os.walk(root):
        for f in files:
            total += 1
            m = _TMP_RE.fullmatch(f)
            target = m.group("target") if m else f
            parsed = names.parse_checkpoint_name(target)
            if parsed is not None and parsed.model == model:
                epochs.append(parsed.epoch)
            elif target == PROBE:
                probes += 1
            elif target == names.final_name(model):
                final += 1
    return Snapshot(tuple(sorted(epochs)), probes, final, total)


class Watcher(threading.Thread):
    """Polls a folder every `interval` s; keeps the maxima and every snapshot over N+1."""

    def __init__(self, root: Path, keep: int, interval: float = 0.002):
        super().__init__(daemon=True)
        self.root, self.keep, self.interval = root, keep, interval
        self.polls = 0
        self.max_checkpoints = self.max_final = self.max_files = 0
        self.over: set[tuple[tuple[int, ...], int]] = set()  # (epochs, probes) above N+1
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            time.sleep(self.interval)
        self.poll()

    def poll(self) -> None:
        s = snapshot(self.root)
        self.polls += 1
        count = len(s.epochs) + s.probes
        self.max_checkpoints = max(self.max_checkpoints, count)
        self.max_final = max(self.max_final, s.final)
        self.max_files = max(self.max_files, s.total)
        if count > self.keep + 1:
            self.over.add((s.epochs, s.probes))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def bound_problems(over, keep: int, keep_best: bool, ever_best: set[int]) -> list[str]:
    """Each snapshot over N+1: the files beyond the newest N+1 must be one ever-best epoch."""
    problems = []
    for epochs, probes in sorted(over):
        newest = keep + 1 - probes  # a probe is the newest file: it lives only while starting
        beyond = list(epochs[: max(len(epochs) - newest, 0)])
        if not (keep_best and len(beyond) == 1 and beyond[0] in ever_best):
            problems.append(f"disk held {len(epochs)} epoch checkpoints {list(epochs)} and {probes} "
                            f"probe(s); beyond the newest {keep + 1}: {beyond} (ever best: "
                            f"{sorted(ever_best)})")
    return problems


# --- one process ------------------------------------------------------------------------------


@dataclass
class Process:
    kill: Kill | None
    resume: bool
    rc: int | None = None
    killed: bool = False  # died by SIGKILL as planned
    seconds: float = 0.0
    output: str = ""


def run_process(cmd: list[str], kill: Kill | None, *, cwd: Path, env: dict, resume: bool) -> Process:
    """Run one trainer in its own process group; kill it as planned; collect its output."""
    env = {**env, "PYTHONUNBUFFERED": "1"}
    env.pop(faults.ENV, None)
    if kill is not None and kill.kind != EXTERNAL:
        env[faults.ENV] = f"{kill.kind}:{kill.n}"
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    saved = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Checkpoint saved"):
                saved.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    trigger = None if kill is None or kill.after_checkpoint else t0
    sent = False
    while proc.poll() is None:
        now = time.monotonic()
        if trigger is None and saved.is_set():
            trigger = now
        if kill is not None and kill.kind == EXTERNAL and trigger is not None and not sent \
                and now >= trigger + kill.delay_s:
            os.killpg(proc.pid, signal.SIGKILL)
            sent = True
        if now - t0 > PROCESS_TIMEOUT_S:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            lines.append(f"[stress] timed out after {PROCESS_TIMEOUT_S:.0f} s\n")
            break
        time.sleep(0.005)
    reader.join(timeout=10)
    out = "".join(lines)
    rc = proc.returncode
    planned = kill is not None and (sent if kill.kind == EXTERNAL else f"{faults.ENV}: SIGKILL at" in out)
    return Process(kill, resume, rc, rc == -signal.SIGKILL and planned, time.monotonic() - t0, out)


def phase(output: str, epochs: int) -> str:
    """Where a process was when it died: starting (or resuming), training, or finishing."""
    if "MLflow run " not in output:  # printed once the run is started or resumed
        return "starting"
    last = names.checkpoint_name(MODEL, epochs)
    if f"Checkpoint saved: {last}" in output or f"(epoch {epochs}/{epochs})" in output:
        return "finishing"
    return "training"


# --- one trial ---------------------------------------------------------------------------------


@dataclass
class Trial:
    index: int
    keep_best: bool
    run_id: str | None = None
    processes: list[Process] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    max_checkpoints: int = 0
    max_final: int = 0
    max_files: int = 0
    polls: int = 0
    over_n1: int = 0  # distinct snapshots above N+1 (each an old best, or a problem)
    cleanups: int = 0  # cleanups of the finished run that a kill was aimed at
    cleanup_kills: int = 0  # of those, killed as planned

    @property
    def kills(self) -> list[Kill]:
        return [p.kill for p in self.processes if p.killed]

    @property
    def ok(self) -> bool:
        return not self.problems


def _finished(uri: str, run_id: str) -> bool:
    run = MlflowClient(uri).get_run(run_id)
    return run.info.status == "FINISHED" and layout.TAG_FINAL_EPOCH in run.data.tags


def _newest_epoch(run_dir: Path) -> int:
    epochs = [p.epoch for f in run_dir.glob("*.pth") if (p := names.parse_checkpoint_name(f.name))]
    return max(epochs, default=0)


def run_trial(index: int, plan: list[Kill | None], rng: random.Random | None, s: Settings, *,
              uri: str, work: Path, dataset: Path, extra_kills: int = 2, again_p: float = 0.5) -> Trial:
    """plan[k] is the kill for process k (None: no kill); past the plan, with `rng`, a resumed
    process is killed again with probability again_p, at most extra_kills times."""
    root = work / f"trial{index:02d}"
    root.mkdir(parents=True)
    trial = Trial(index, s.keep_best)
    watcher = Watcher(root, s.keep)
    watcher.start()
    base = [sys.executable, str(ROOT / "cli.py"), "train", "--tracking-uri", uri,
            "--checkpoint-dir", str(root)]
    extra = 0
    try:
        for k in range(MAX_PROCESSES):
            resume = trial.run_id is not None
            left = s.epochs - (_newest_epoch(root / trial.run_id) if resume else 0)
            if k < len(plan):
                kill = plan[k]
            elif rng is not None and extra < extra_kills and k < MAX_PROCESSES - 1 \
                    and rng.random() < again_p:
                kill = draw_kill(rng, rng.choice(KINDS), s, first=False, epochs_left=left)
                extra += 1
            else:
                kill = None
            cmd = base + (["--resume", trial.run_id, "--quiet"] if resume
                          else ["--dataset", str(dataset), *s.train_args()])
            p = run_process(cmd, kill, cwd=work, env=s.env(), resume=resume)
            trial.processes.append(p)
            logs = work / "logs"
            logs.mkdir(exist_ok=True)
            (logs / f"trial{index:02d}-p{k}.log").write_text(f"kill {kill}, exit {p.rc}\n{p.output}")
            if trial.run_id is None:
                runs = [d.name for d in root.iterdir() if d.is_dir()]
                trial.run_id = runs[0] if len(runs) == 1 else None
            if p.rc == 0:
                break
            if p.killed and trial.run_id is not None and _finished(uri, trial.run_id):
                break  # killed after the run was closed: done (a resume would rightly refuse it)
            if not p.killed or trial.run_id is None:
                tail = "\n".join(p.output.strip().splitlines()[-6:])
                trial.problems.append(f"process {k} ({'resume' if resume else 'fresh'}, kill {kill}) "
                                      f"exited {p.rc} without the planned kill:\n{tail}")
                return trial
        else:
            trial.problems.append(f"not finished after {MAX_PROCESSES} processes")
            return trial
    finally:
        watcher.stop()
        trial.max_checkpoints, trial.max_final = watcher.max_checkpoints, watcher.max_final
        trial.max_files, trial.polls, trial.over_n1 = watcher.max_files, watcher.polls, len(watcher.over)
    trial.problems += verify(uri, trial.run_id, root / trial.run_id, s, watcher.over)
    return trial


# --- checks after a trial ------------------------------------------------------------------------


def ever_best(client: MlflowClient, run_id: str, s: Settings) -> set[int]:
    """Every epoch that was the run's best `map` at some point (what keep_best protected)."""
    cfg = TrackerConfig(monitor="map", patience=1000).stop_config(s.burnin)
    history = sorted(client.get_metric_history(run_id, "map"), key=lambda m: m.timestamp)
    state, best = StopState(), set()
    for step, value in dedupe((m.step, m.value) for m in history):
        state = fold(state, step, value, cfg)
        if state.best_epoch is not None:
            best.add(state.best_epoch)
    return best


def _loads(path: Path, epoch: int | None) -> str | None:
    try:
        ckpt = load(path)
    except CheckpointError as e:
        return str(e)
    if epoch is not None and int(ckpt["epoch"]) != epoch:
        return f"{path.name} holds epoch {ckpt['epoch']}"
    return None


def verify(uri: str, run_id: str, run_dir: Path, s: Settings, over) -> list[str]:
    client = MlflowClient(uri)
    problems = []
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        problems.append(f"run status {run.info.status}")
    store = TrackedCheckpoints(run_id, client=client)
    tracked = store.list()
    local = {f.name: f.stat().st_size for f in run_dir.iterdir()
             if f.is_file() and names.parse_checkpoint_name(f.name)}
    if local != tracked:
        problems.append(f"local {sorted(local.items())} != tracked {sorted(tracked.items())}")
    problems += record_problems(client, run_id, run_dir, local)
    leftovers = sorted(f.name for f in run_dir.iterdir() if f.name.endswith(".tmp"))
    if leftovers:
        problems.append(f"partial saves left: {leftovers}")
    with tempfile.TemporaryDirectory(prefix="tracked-", dir=run_dir.parent) as scratch:
        for name in sorted(set(local) | set(tracked)):
            epoch = names.parse_checkpoint_name(name).epoch
            if name in local and (err := _loads(run_dir / name, epoch)):
                problems.append(f"local {err}")
            if name in tracked and (err := _loads(store.download(name, scratch), epoch)):
                problems.append(f"tracked {err}")
    final = run_dir / names.final_name(MODEL)
    if not final.is_file():
        problems.append(f"no local final model {final.name}")
    elif err := _loads(final, None):
        problems.append(f"final model: {err}")
    listed = {a.path: a.file_size for a in client.list_artifacts(run_id, layout.FINAL_FOLDER)}
    want = f"{layout.FINAL_FOLDER}/{final.name}"
    if final.is_file() and listed.get(want) != final.stat().st_size:
        problems.append(f"tracked final model: {want} listed as {listed.get(want)}, local "
                        f"{final.stat().st_size} bytes")
    # the retained set: exactly the newest N, plus the best epoch when keep_best holds it; when
    # checkpoints may be replaced, the newest N stored: the last epoch, and at most N besides the best
    epochs = {names.parse_checkpoint_name(n).epoch for n in local}
    newest = set(range(s.epochs - s.keep + 1, s.epochs + 1))
    best = int(run.data.tags.get(layout.TAG_BEST_EPOCH, -1))
    allowed = newest | ({best} if s.keep_best else set())
    if s.supersede:
        if s.epochs not in epochs or len(epochs - ({best} if s.keep_best else set())) > s.keep:
            problems.append(f"retained epochs {sorted(epochs)}: expected epoch {s.epochs} and at most "
                            f"{s.keep} others" + (f" besides the best {best}" if s.keep_best else ""))
    elif not newest <= epochs or not epochs <= allowed:
        problems.append(f"retained epochs {sorted(epochs)}, expected the newest {sorted(newest)}"
                        + (f" (+ best {best})" if s.keep_best else ""))
    # every epoch's metrics went in (a replaced checkpoint's too), each step once or more
    steps = {int(m.step) for m in client.get_metric_history(run_id, "loss")}
    if steps != set(range(1, s.epochs + 1)):
        problems.append(f"loss logged for epochs {sorted(steps)}, expected 1..{s.epochs}")
    problems += bound_problems(over, s.keep, s.keep_best, ever_best(client, run_id, s))
    return problems


def record_problems(client: MlflowClient, run_id: str, run_dir: Path, local: dict) -> list[str]:
    """The run's manifest and its retained-epochs tags say what the folder holds."""
    try:
        entries = Manifest.open(run_dir, run_id=run_id).entries().values()
    except ManifestError as e:
        return [f"manifest: {e}"]
    stored = {e.name: e.size for e in entries if e.state == "stored"}
    problems = [] if stored == local else [
        f"manifest stored {sorted(stored.items())} != local {sorted(local.items())}"]
    tags = client.get_run(run_id).data.tags
    tagged = tags.get(layout.TAG_RETAINED_EPOCHS, "")
    epochs = ",".join(str(e) for e in sorted(names.parse_checkpoint_name(n).epoch for n in local))
    if tagged != epochs:
        problems.append(f"tag {layout.TAG_RETAINED_EPOCHS}={tagged!r}, the folder holds {epochs!r}")
    return problems


def cleanup_after_kill(uri: str, run_id: str, run_dir: Path, kill: Kill, keep: int, *, work: Path,
                       log: str) -> tuple[list[Process], list[str]]:
    """`cleanup --run-id --keep` killed as planned, then run again to the end; then every side
    (local, tracked, manifest, tags) must agree and hold the newest `keep` (+ the best)."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "cleanup", "--run-id", run_id, "--keep", str(keep),
           "--tracking-uri", uri]
    first = run_process(cmd, kill, cwd=work, env=dict(os.environ), resume=False)
    again = run_process(cmd, None, cwd=work, env=dict(os.environ), resume=False)
    (work / "logs" / f"{log}-cleanup.log").write_text(f"kill {kill}, exit {first.rc}\n{first.output}\n"
                                                       f"again: exit {again.rc}\n{again.output}")
    problems = []
    if kill.kind != EXTERNAL and not first.killed:
        problems.append(f"cleanup was not killed at {kill} (exit {first.rc})")
    if again.rc != 0:
        problems.append(f"cleanup after the kill exited {again.rc}: {again.output.strip()[-300:]}")
    client = MlflowClient(uri)
    tracked = TrackedCheckpoints(run_id, client=client).list()
    local = {f.name: f.stat().st_size for f in run_dir.iterdir()
             if f.is_file() and names.parse_checkpoint_name(f.name)}
    if local != tracked:
        problems.append(f"after cleanup: local {sorted(local)} != tracked {sorted(tracked)}")
    problems += record_problems(client, run_id, run_dir, local)
    epochs = sorted(names.parse_checkpoint_name(n).epoch for n in local)
    best = int(client.get_run(run_id).data.tags.get(layout.TAG_BEST_EPOCH, -1))
    newest = max(epochs, default=-1)
    if not epochs or not set(epochs) <= {newest, best} or len(epochs) > keep + 1:
        problems.append(f"after cleanup --keep {keep}: epochs {epochs} (best {best})")
    return [first, again], problems


# --- the whole stress run --------------------------------------------------------------------------


def _most(trials: list[Trial], attr: str, keep_best: bool) -> str:
    values = [getattr(t, attr) for t in trials if t.keep_best == keep_best]
    return str(max(values)) if values else "-"


def summarize(trials: list[Trial], s: Settings, seconds: float) -> str:
    tried = Counter(p.kill.kind for t in trials for p in t.processes if p.killed)
    survived = Counter(p.kill.kind for t in trials if t.ok for p in t.processes if p.killed)
    missed = Counter(p.kill.kind for t in trials for p in t.processes if p.kill and not p.killed)
    phases = Counter(phase(p.output, s.epochs) for t in trials for p in t.processes if p.killed)
    n = s.keep
    lines = [
        f"trials: {sum(t.ok for t in trials)}/{len(trials)} passed every check "
        f"({seconds:.0f} s, {sum(len(t.processes) for t in trials)} trainer processes)",
        f"kills survived / tried: {sum(survived.values())}/{sum(tried.values())}",
        f"cleanups killed then finished: {sum(t.cleanup_kills for t in trials)} killed of "
        f"{sum(t.cleanups for t in trials)} (manifest, tags, local and tracked agreeing after each)",
        "per kind (survived/tried; planned but not reached): " + ", ".join(
            f"{k} {survived[k]}/{tried[k]}" + (f" ({missed[k]} not reached)" if missed[k] else "")
            for k in KINDS),
        "kills by phase: " + ", ".join(f"{k} {phases[k]}" for k in ("starting", "training", "finishing")),
        f"keep N={n}: max epoch checkpoints on disk at once (complete, partial saves, the disk "
        f"guard's probe): {_most(trials, 'max_checkpoints', True)} with keep-best (bound N+1={n + 1} "
        f"+ an old best), {_most(trials, 'max_checkpoints', False)} without (bound {n + 1})",
        f"max final-model files at once (complete + its partial save): "
        f"{max(t.max_final for t in trials)}; max files of any kind: "
        f"{_most(trials, 'max_files', True)} with keep-best, {_most(trials, 'max_files', False)} without",
        f"snapshots above N+1 (each an old best kept by keep-best): "
        f"{sum(t.over_n1 for t in trials if t.keep_best)} with keep-best, "
        f"{sum(t.over_n1 for t in trials if not t.keep_best)} without; "
        f"{sum(t.polls for t in trials)} polls",
    ]
    for t in trials:
        if not t.ok:
            lines.append(f"trial {t.index} FAILED ({', '.join(map(str, t.kills))}):")
            lines += [f"  {p}" for p in t.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.stress.kill_stress",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="random seed [default: from the clock]")
    ap.add_argument("--epochs", type=int, default=Settings.epochs)
    ap.add_argument("--keep", type=int, default=Settings.keep)
    ap.add_argument("--keep-best", choices=["on", "off", "mix"], default="mix",
                    help="mix: trials alternate --keep-best (even) and --no-keep-best (odd)")
    ap.add_argument("--no-cleanup-kills", dest="cleanup_kills", action="store_false",
                    help="skip the phase that kills a `cleanup --keep 1` of each finished trial")
    ap.add_argument("--supersede", choices=["on", "off", "mix"], default="mix",
                    help="on: the default at the upload bound (waiting checkpoints only newest N keeps "
                         "are replaced); off: --store-every-checkpoint; mix: alternate in pairs")
    ap.add_argument("--workers", type=int, default=Settings.workers,
                    help="training processes per run (as many as cores: the paced uploader)")
    ap.add_argument("--server", action="store_true",
                    help="train through a proxied `mlflow server` (SQLite backend) instead")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the files (and logs/ of every process) here [default: a temp dir]")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads in checks
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    with ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hype-stress-")))
        work.mkdir(parents=True, exist_ok=True)
        dataset = write_tree_closure(work / "tree.csv", branching=3, depth=3)
        if args.server:
            from tests.servers import mlflow_server

            uri = stack.enter_context(mlflow_server(work / "server")).url
        else:
            uri = f"sqlite:///{work / 'mlflow.db'}"
        print(f"kill stress: {args.trials} trials, seed {seed}, store {uri}, work {work}", flush=True)
        trials, t0 = [], time.monotonic()
        for i in range(args.trials):
            keep_best = {"on": True, "off": False}.get(args.keep_best, i % 2 == 0)
            supersede = {"on": True, "off": False}.get(args.supersede, (i // 2) % 2 == 1)
            s = Settings(epochs=args.epochs, keep=args.keep, keep_best=keep_best, supersede=supersede,
                         workers=args.workers)
            first = draw_kill(rng, KINDS[i % len(KINDS)], s, first=True, epochs_left=s.epochs)
            t = run_trial(i, [first], rng, s, uri=uri, work=work, dataset=dataset)
            if t.ok and args.cleanup_kills:
                kill = (Kill("delete", rng.randint(1, max(s.keep - 1, 1))) if rng.random() < 0.7
                        else Kill(EXTERNAL, delay_s=rng.uniform(0.5, 2.5), after_checkpoint=False))
                procs, problems = cleanup_after_kill(uri, t.run_id, work / f"trial{i:02d}" / t.run_id,
                                                     kill, 1, work=work, log=f"trial{i:02d}")
                t.cleanups += 1
                t.cleanup_kills += procs[0].killed
                t.problems += problems
            trials.append(t)
            print(f"trial {i:2d}: {'ok  ' if t.ok else 'FAIL'} keep_best={keep_best!s:5} "
                  f"supersede={supersede!s:5} kills "
                  f"[{', '.join(map(str, t.kills))}] processes {len(t.processes)} max ckpts "
                  f"{t.max_checkpoints} ({sum(p.seconds for p in t.processes):.0f} s)", flush=True)
        print(summarize(trials, Settings(epochs=args.epochs, keep=args.keep), time.monotonic() - t0))
    return 0 if all(t.ok for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
