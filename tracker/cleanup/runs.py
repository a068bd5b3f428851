"""Which runs a tracking-store cleanup looks at: ``--run-id``, ``--experiment``, ``--all-experiments``.

Only the store is read here (with a short retry budget: a person waits for a cleanup); what
is decided and deleted for each run is the lifecycle's (tracker.cleanup.targets).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracker.store.errors import StoreError, TrackingError, TrackingUnavailable
from tracker.store.open import READ_PROBE, resolve_and_open
from tracker.store.redact import redact
from tracker.store.retry import call_with_retry


class CleanupError(ValueError):
    """The cleanup cannot start: a one-line message naming the path or store and what is wrong."""


IN_PROGRESS = frozenset({"RUNNING", "SCHEDULED"})  # a trainer may still be writing these runs
# A cleanup is run by a person who waits for it: fail within seconds, not minutes.
RETRY = READ_PROBE


# ---------------------------------------------------------------------------------------------
# Selecting runs


def open_client(uri: str) -> MlflowClient:
    """A client for ``uri`` that is known to answer; CleanupError (one line) otherwise.

    The checks are train's (tracker.store.open.resolve_and_open), but a SQLite file that does
    not exist is an error, not a new empty store: cleanup must not create databases.
    """
    try:
        return resolve_and_open(uri, create=False, probe=RETRY)[1]
    except (TrackingError, TrackingUnavailable) as e:
        raise CleanupError(str(e)) from None


def _call(what: str, fn):
    try:
        return call_with_retry(what, fn, RETRY)
    except StoreError as e:
        raise CleanupError(str(e)) from None


@dataclass(frozen=True)
class Selected:
    run: Run
    experiment: str  # the experiment's name, for reports


def select_runs(
    client: MlflowClient,
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    all_experiments: bool = False,
) -> list[Selected]:
    """The runs to clean: one by id, every active run of one experiment, or of all of them.

    Raises CleanupError naming what does not exist (and, for an experiment, what does).
    """
    if sum((run_id is not None, experiment is not None, all_experiments)) != 1:
        raise ValueError("give exactly one of run_id, experiment, all_experiments")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise CleanupError(f"no run with id {run_id!r} in {redact(client.tracking_uri)}") from None
            raise CleanupError(f"cannot look up run {run_id!r}: {redact(e.message)}") from None
        exp = client.get_experiment(run.info.experiment_id)
        return [Selected(run, exp.name)]
    if experiment is not None:
        exp = _call(f"look up experiment {experiment!r}", lambda: client.get_experiment_by_name(experiment))
        if exp is None or exp.lifecycle_stage == "deleted":
            names = sorted(e.name for e in _experiments(client))
            shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
            raise CleanupError(
                f"no experiment named {experiment!r} in {redact(client.tracking_uri)} "
                f"(experiments: {shown or 'none'})"
            )
        experiments = [exp]
    else:
        experiments = _experiments(client)
    return [Selected(run, exp.name) for exp in experiments for run in _runs(client, exp.experiment_id)]


def _experiments(client: MlflowClient) -> list:
    out, token = [], None
    while True:
        page = _call("list experiments", lambda t=token: client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=t))
        out.extend(page)
        token = page.token
        if not token:
            return out


def _runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    out, token = [], None
    while True:
        page = _call(f"list runs of experiment {experiment_id}", lambda t=token: client.search_runs(
            [experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
            order_by=["attributes.start_time ASC"], page_token=t))
        out.extend(page)
        token = page.token
        if not token:
            return out
