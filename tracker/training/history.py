"""What a run has trained, as its store says: the epochs it ran, an epoch's metrics, and whether a
resume's --epochs (or its resume record) fits them. Used by tracker.training.resume."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.store.errors import TrackingError


def check_epochs(run, ran: int, epochs: int | None, from_epoch: int | None, finished: bool,
                 planned: int) -> None:
    """Refuse (one line) a resume whose epochs do not fit the run: ``ran`` trained, ``planned``
    by its params as resumed, ``epochs`` and ``from_epoch`` as given."""
    run_id = run.info.run_id
    if from_epoch is not None:
        target = planned if epochs is None else epochs
        if from_epoch < 0 or target <= from_epoch:
            raise TrackingError(f"--from-epoch {from_epoch}: the run would train up to epoch {target}; "
                                f"give --epochs N with N > {from_epoch}")
        return
    if finished and (epochs is None or epochs <= ran):
        why = run.data.tags.get(layout.TAG_STOP_REASON, "finished")
        raise TrackingError(f"run {run_id} is FINISHED ({why}) after {ran} epochs; nothing was changed. "
                            f"To continue it, pass --epochs N with N > {ran}")
    if epochs is not None and epochs <= ran:
        raise TrackingError(f"--epochs {epochs}: run {run_id} has already trained {ran} epochs; "
                            f"give more than {ran} (or leave --epochs out to finish its {planned})")
    if epochs is None and planned < ran:  # only an edited resume record can say so
        raise TrackingError(f"cannot resume run {run_id}: it is to train {planned} epochs (its params and "
                            f"resume record) but has trained {ran}; nothing was changed. Give --epochs N "
                            f"with N > {ran}")


def epoch_metrics(client: MlflowClient, run, epoch: int) -> list:
    """The Metric rows of ``epoch`` as the store holds them (each key's last row of that step):
    what a checkpoint model that is made again links to, as its first one did."""
    out = []
    for key in sorted(run.data.metrics):
        rows = [m for m in client.get_metric_history(run.info.run_id, key) if m.step == epoch]
        if rows:
            out.append(max(rows, key=lambda m: m.timestamp))
    return out


def epochs_ran(client: MlflowClient, run_id: str) -> int:
    """The newest epoch the run logged (its loss is logged every epoch)."""
    return max((int(m.step) for m in client.get_metric_history(run_id, "loss")), default=0)
