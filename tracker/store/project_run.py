"""`mlflow run`'s run: which experiment it belongs in, moving it there, recording into it.

`mlflow run` creates the run before our command starts, in the store and experiment it resolved
(MLFLOW_TRACKING_URI, else MLflow's own default: sqlite:///mlflow.db in the working folder, which
from the project folder is hype's default store; --experiment-name or MLFLOW_EXPERIMENT_NAME/_ID,
else Default), and passes its id in MLFLOW_RUN_ID. hype records nothing in Default: a run there
was given no experiment, so it goes where the command's own work goes (train: hype; cleanup: the
experiment it cleans; evaluate: the evaluated run's). An experiment that was named is kept.

MLflow cannot move a run between experiments, so a move is a copy in the same store: a new run
with the original's tags (source, git commit, entry point, ...) and params (the -P values), and
the original's id in TAG_MOVED_FROM; the original gets TAG_MOVED_TO. The original must then go,
but not before `mlflow run` is done with it: after the command exits, MLflow 3.17 always sets
its run's status (its `_maybe_set_run_terminated` compares a status string with ints, so it never
sees that the run has ended), and a deleted run cannot be written: `mlflow run` would fail. So a
small detached process (`--retire`) waits for that last write and then deletes the original.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracker.layout import PROJECT_ROOT, TAG_NOTE
from tracker.store.errors import TrackingError, TrackingUnavailable
from tracker.store.redact import one_line

DEFAULT_EXPERIMENT = "hype"  # train's --experiment default (tests/test_mlproject.py checks)
MLFLOW_DEFAULT_ID = "0"  # MLflow's Default experiment, where `mlflow run` puts an unnamed one
TAG_MOVED_FROM = "hype.mlflow_run_id"  # on the moved run: the id `mlflow run` printed
TAG_MOVED_TO = "hype.moved_to"  # on that original: where it went (it is then deleted)
TAG_ERROR = "hype.error"  # on an original that recorded nothing (deleted too): why
# On a run that records what a command did (cleanup, evaluate): no checkpoints, no cleanup target.
TAG_COMMAND = "hype.command"
# `mlflow run` ends its run within a second of the command's exit; past this the retiring
# process takes it that `mlflow run` was killed, ends the run itself and deletes it.
RETIRE_WAIT_S = 120.0


def destination(experiment_id: str, wanted: str) -> str | None:
    """The experiment to move `mlflow run`'s run to, or None to leave it where it is: only a run
    in Default moves (an experiment that was named, even to hype's own, is the user's choice)."""
    return wanted if experiment_id == MLFLOW_DEFAULT_ID else None


def retire_problem(run: Run, moved: Run | None) -> str | None:
    """Why `mlflow run`'s original run must not be deleted, or None. Its tags are only a hint
    (anyone may write them): the copy it names must name it back."""
    run_id = run.info.run_id
    if run.info.experiment_id != MLFLOW_DEFAULT_ID:
        return f"run {run_id} is not in Default"
    if TAG_MOVED_TO in run.data.tags:
        if moved is None or moved.data.tags.get(TAG_MOVED_FROM) != run_id:
            return f"run {run.data.tags[TAG_MOVED_TO]} does not name run {run_id} as its origin"
        return None
    if TAG_ERROR not in run.data.tags:
        return f"run {run_id} was neither moved nor failed by hype"
    return None


@dataclass
class ProjectRun:
    """`mlflow run`'s run as one command sees it. ``run_id`` is the run to record into: the
    original until ``place`` moves it, then the copy."""

    client: MlflowClient
    uri: str
    original: Run  # as `mlflow run` made it
    run_id: str = ""
    experiment_id: str = ""
    moved: bool = False
    placed: bool = False
    ended: bool = False

    def __post_init__(self):
        self.run_id, self.experiment_id = self.original.info.run_id, self.original.info.experiment_id

    @property
    def chosen_experiment(self) -> str | None:
        """The experiment `mlflow run` was told to use (its name), or None: it used Default."""
        exp_id = self.original.info.experiment_id
        if exp_id == MLFLOW_DEFAULT_ID:
            return None
        return self._call("look up its experiment", lambda: self.client.get_experiment(exp_id).name)

    def place(self, experiment: str) -> str:
        """Put the run where it belongs (out of Default, into ``experiment``); the id to record into."""
        if self.placed:
            return self.run_id
        target = destination(self.experiment_id, experiment)
        if target is not None:
            self._move(target)
        self.placed = True
        # what runs in this process after us (train adopts MLFLOW_RUN_ID) sees the placed run
        os.environ["MLFLOW_RUN_ID"], os.environ["MLFLOW_EXPERIMENT_ID"] = self.run_id, self.experiment_id
        if target is not None:
            os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # it named Default, if anything
        return self.run_id

    def _move(self, experiment: str) -> None:
        from tracker.store.open import get_or_create_experiment

        run, old = self.original, self.original.info.run_id
        exp_id = get_or_create_experiment(self.client, self.uri, experiment)  # ./mlartifacts/<name>
        tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
        tags[TAG_MOVED_FROM] = old
        new = self._call(f"copy it into experiment {experiment!r}", lambda: self.client.create_run(
            exp_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)).info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        self._call("copy its params", lambda: self.client.log_batch(new, params=params))
        note = f"`mlflow run` made this run in Default; hype moved it to {experiment!r} as run {new}."
        self._call("tag it", lambda: self.client.log_batch(
            old, tags=[RunTag(TAG_MOVED_TO, new), RunTag(TAG_NOTE, note)]))
        print(f"`mlflow run` was given no experiment and made run {old} in Default: recording into "
              f"run {new} of experiment {experiment!r} instead ({old} is deleted at the end)",
              file=sys.stderr)
        self.run_id, self.experiment_id, self.moved = new, exp_id, True

    def record(self, command: str, *, metrics: dict | None = None, params: dict | None = None,
               tags: dict | None = None) -> None:
        """Log what ``command`` did into the placed run; a param `mlflow run` already logged (a -P
        value) is kept."""
        if not self.placed:
            raise RuntimeError("place() the run before recording into it")
        logged = self._call("read it", lambda: self.client.get_run(self.run_id)).data.params
        now = int(time.time() * 1000)
        tags = {TAG_COMMAND: command, **(tags or {})}
        batch = {"metrics": [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                 "params": [Param(k, str(v)) for k, v in (params or {}).items() if k not in logged],
                 "tags": [RunTag(k, str(v)) for k, v in tags.items()]}
        self._call("record into it", lambda: self.client.log_batch(self.run_id, **batch))

    def end(self, ok: bool, error: str | None = None) -> None:
        """End the run (unless the command did) and have the original in Default retired: the
        one moved from, or one never placed (the command failed first: nothing to keep)."""
        if self.ended:
            return
        self.ended = True
        status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        if self.original.info.experiment_id != MLFLOW_DEFAULT_ID:
            self._finish(self.run_id, status)
            return
        if self.moved:
            self._finish(self.run_id, status)
        else:
            why = (error or ("recorded nothing" if ok else "failed")).strip()[:5000]
            self._call("tag it", lambda: self.client.set_tag(self.run_id, TAG_ERROR, why))
        retire_later(self.uri, self.original.info.run_id)  # `mlflow run` ends it first

    def _finish(self, run_id: str, status: str) -> None:
        if not _ended(self._call("read it", lambda: self.client.get_run(run_id))):
            self._call("end it", lambda: self.client.set_terminated(run_id, status))

    def _call(self, what: str, fn: Callable):
        try:
            return fn()
        except MlflowException as e:
            raise TrackingError(f"`mlflow run`'s run {self.original.info.run_id}: cannot {what}: "
                                f"{one_line(e)}") from None


def attach(uri: str | None = None) -> ProjectRun | None:
    """The run MLFLOW_RUN_ID names (in MLFLOW_TRACKING_URI's store, where `mlflow run` made it),
    checked as train checks it; None when the variable is unset.

    TrackingError when it is not a run that `mlflow run` just created (a variable left over must
    not make a command record into, or delete, an old run); TrackingUnavailable when the store
    does not answer."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    from tracker.store.open import READ_PROBE, open_tracking_store
    from tracker.store.uri import resolve_tracking_uri
    from tracker.training.start import adopted_run

    uri = resolve_tracking_uri(uri)
    client = open_tracking_store(uri, create=False, probe=READ_PROBE)
    run = adopted_run(client, uri, run_id, into="recorded into",
                      missing="unset it (it is for `mlflow run` to set)", other="Unset MLFLOW_RUN_ID")
    return ProjectRun(client, uri, run)


@contextmanager
def recording(project: ProjectRun | None) -> Iterator[ProjectRun | None]:
    """End ``project`` (None: outside `mlflow run`, nothing to do) when the command inside ends:
    FINISHED when it exits 0, else FAILED."""
    if project is None:
        yield None
        return
    try:
        yield project
    except BaseException as e:
        ok = _exit_code(e) == 0
        project.end(ok, error=None if ok else _message(e))
        raise
    project.end(True)


def _exit_code(e: BaseException) -> int:
    if isinstance(e, SystemExit):  # cli.main's way out, 0 included
        return 0 if e.code in (0, None) else 1
    code = getattr(e, "exit_code", None)  # click's Exit (ctx.exit) and ClickException
    return code if isinstance(code, int) else 1


def _message(e: BaseException) -> str:
    if hasattr(e, "format_message"):  # a ClickException: its one line, as the user saw it
        return e.format_message()
    return one_line(e)


def retire_later(uri: str, run_id: str) -> None:
    """Start the process that deletes run_id once `mlflow run` has ended it; it outlives us, so
    it holds none of our pipes (a caller reading our output would wait for it) and gets the URI,
    which may hold a password, through its environment, not its command line."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env["MLFLOW_TRACKING_URI"] = uri
    subprocess.Popen([sys.executable, "-m", "tracker.store.project_run", "--retire", run_id],
                     cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def retire(client: MlflowClient, run_id: str, *, wait_s: float = RETIRE_WAIT_S, poll_s: float = 0.1) -> str:
    """Delete `mlflow run`'s original run once its status says `mlflow run` ended it (or, after
    wait_s, end it here: `mlflow run` is gone). What was done, in words."""
    deadline = time.monotonic() + wait_s
    run = client.get_run(run_id)
    while not _ended(run) and run.info.lifecycle_stage == "active":
        if time.monotonic() > deadline:
            client.set_terminated(run_id, "FAILED")
        else:
            time.sleep(poll_s)
        run = client.get_run(run_id)
    if run.info.lifecycle_stage == "deleted":
        return f"run {run_id} was already deleted"
    moved_to = run.data.tags.get(TAG_MOVED_TO)
    moved = None
    if moved_to:
        try:
            moved = client.get_run(moved_to)
        except MlflowException:
            pass
    problem = retire_problem(run, moved)
    if problem:
        return f"run {run_id} kept: {problem}"
    client.delete_run(run_id)
    return f"run {run_id} deleted"


def _ended(run: Run) -> bool:
    return RunStatus.is_terminated(RunStatus.from_string(run.info.status))


def main(argv: list[str] | None = None) -> None:
    """`python -m tracker.store.project_run SUBCOMMAND ARGS...`: cli.py SUBCOMMAND ARGS in
    `mlflow run`'s run, moved first into the subcommand's --experiment (its default: hype); for
    a subcommand that adopts MLFLOW_RUN_ID itself (train). `--retire RUN_ID`: see retire()."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--retire"] and len(args) == 2:
        print(retire(MlflowClient(os.environ["MLFLOW_TRACKING_URI"]), args[1]))
        return
    from cli import cli

    if not args or args[0] not in cli.commands:
        raise SystemExit(f"usage: python -m tracker.store.project_run SUBCOMMAND ARGS... "
                         f"(SUBCOMMAND: one of {', '.join(sorted(cli.commands))})")
    experiment = _option_value(args, "--experiment") or DEFAULT_EXPERIMENT
    try:
        project = attach()
        with recording(project):
            if project is not None:
                project.place(experiment)
            cli.main(args=args, prog_name="cli.py")
    except (TrackingError, TrackingUnavailable) as e:
        raise SystemExit(f"Error: {e}") from None


def _option_value(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


if __name__ == "__main__":
    main()
