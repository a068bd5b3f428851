"""Early stopping reads the store's history once at resume; after that each decision folds the
value just logged (as the store returns it: bit for bit when finite), with no read: flat per epoch."""

from __future__ import annotations

import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from hype.train import EpochResult, new_state
from tests.datasets import write_tree_closure
from tracker.checkpoints.lifecycle import RunCheckpoints
from tracker.policy import stopping
from tracker.training.callbacks import Progress, RunContext, TrackedTraining, TrackerConfig


class CountingClient(MlflowClient):
    """A real client that counts what early stopping reads back."""

    def __init__(self, uri):
        super().__init__(uri)
        self.history_calls = 0
        self.run_reads = 0

    def get_metric_history(self, run_id, key):
        self.history_calls += 1
        return super().get_metric_history(run_id, key)

    def get_run(self, run_id):
        self.run_reads += 1
        return super().get_run(run_id)


def end_epoch(tracked: TrackedTraining, result: EpochResult, state) -> str | None:
    """An epoch as the trainer ends it: the decision on this thread, then the job's one request
    that logs the epoch's metrics (here without a checkpoint, whose steps other tests cover)."""
    reason = tracked.on_epoch_end(result, state)
    tracked._log_epoch(tracked.snapshot(result.epoch), None)
    return reason


def test_decision_cost_is_flat_after_10000_epochs(sqlite_tracking, tmp_path):
    client = CountingClient(sqlite_tracking.tracking_uri)
    exp = client.create_experiment("flat")
    run_id = client.create_run(exp).info.run_id
    # 10,000 epochs of a slowly improving map already in the store
    values = [(step, 0.5 + step * 1e-5) for step in range(1, 10_001)]
    for i in range(0, len(values), 1000):
        client.log_batch(run_id, metrics=[Metric("map", v, 0, s) for s, v in values[i:i + 1000]])
    graph = load_edge_csv(write_tree_closure(tmp_path / "t.csv", depth=2))
    config = TrainConfig(dim=2, burnin=0, epochs=20_000)
    tconfig = TrackerConfig(model_name="t", patience=3, checkpoint_root=tmp_path)
    stop_cfg = tconfig.stop_config(config.burnin)
    state0 = stopping.replay(values, stop_cfg)  # what resume computes from the one history read
    checkpoints = RunCheckpoints(run_id, "t", store=None, folder=tmp_path, manifest=None)
    tracked = TrackedTraining(RunContext(client, run_id, graph, config, tconfig, checkpoints),
                              Progress(stop_state=state0))
    state = new_state(graph, config)
    seconds = []
    reasons = []
    for epoch in range(10_001, 10_005):  # one improvement, then flat
        t0 = time.perf_counter()
        reasons.append(end_epoch(tracked, EpochResult(epoch, 0.1, 0.3, 0.01, {"map": 0.7}), state))
        seconds.append(time.perf_counter() - t0)
    assert client.history_calls == 0  # never re-reads the 10,000 points
    assert client.run_reads == 0  # a finite value is stored as logged: nothing to read back
    assert reasons[:3] == [None, None, None]
    assert reasons[3] == ("stopped: no improvement in map for 3 evaluations "
                          "(best 0.7 at epoch 10001)")
    # the same decision as a replay of the whole (deduplicated) history from the store
    store = MlflowClient(sqlite_tracking.tracking_uri)
    full = [(m.step, m.value) for m in store.get_metric_history(run_id, "map")]
    assert stopping.replay(full, stop_cfg).best_epoch == 10_001
    assert stopping.replay(full, stop_cfg) == tracked.progress.stop_state


def test_a_value_the_store_changes_is_decided_as_the_store_returns_it(sqlite_tracking, tmp_path):
    """An infinite loss is stored as another number (and NaN as NaN): the decision folds what
    the store returns, so that a resume's replay of the history decides the same."""
    client = CountingClient(sqlite_tracking.tracking_uri)
    run_id = client.create_run(client.create_experiment("inf")).info.run_id
    graph = load_edge_csv(write_tree_closure(tmp_path / "t.csv", depth=2))
    config = TrainConfig(dim=2, burnin=0, epochs=10)
    tconfig = TrackerConfig(model_name="t", patience=2, monitor="loss", checkpoint_root=tmp_path)
    stop_cfg = tconfig.stop_config(config.burnin)
    checkpoints = RunCheckpoints(run_id, "t", store=None, folder=tmp_path, manifest=None)
    tracked = TrackedTraining(RunContext(client, run_id, graph, config, tconfig, checkpoints), Progress())
    state = new_state(graph, config)
    for epoch, loss in enumerate([float("inf"), 2.0, 1.0], start=1):
        end_epoch(tracked, EpochResult(epoch, loss, 0.3, 0.01, {}), state)
    assert client.history_calls == 1  # only the infinite one was read back (its step)
    full = [(m.step, m.value) for m in MlflowClient(sqlite_tracking.tracking_uri).get_metric_history(
        run_id, "loss")]
    assert stopping.replay(full, stop_cfg) == tracked.progress.stop_state


def test_a_nan_after_a_rollback_is_read_back_at_its_own_step(sqlite_tracking, tmp_path):
    """The store holds steps 1-6 of an earlier attempt; the run went back to epoch 3 and epoch 4
    is NaN. The value read back is epoch 4's (not the run's latest, step 6's 0.99), so the
    decision is the store's replay."""
    client = CountingClient(sqlite_tracking.tracking_uri)
    run_id = client.create_run(client.create_experiment("nan")).info.run_id
    first = [(1, 0.5), (2, 0.6), (3, 0.55), (4, 0.5), (5, 0.57), (6, 0.99)]
    client.log_batch(run_id, metrics=[Metric("map", v, 1, s) for s, v in first])
    graph = load_edge_csv(write_tree_closure(tmp_path / "t.csv", depth=2))
    config = TrainConfig(dim=2, burnin=0, epochs=10)
    tconfig = TrackerConfig(model_name="t", patience=5, checkpoint_root=tmp_path)
    stop_cfg = tconfig.stop_config(config.burnin)
    checkpoints = RunCheckpoints(run_id, "t", store=None, folder=tmp_path, manifest=None)
    tracked = TrackedTraining(RunContext(client, run_id, graph, config, tconfig, checkpoints),
                              Progress(stop_state=stopping.replay(first[:3], stop_cfg)))
    end_epoch(tracked, EpochResult(4, 0.1, 0.3, 0.01, {"map": float("nan")}), new_state(graph, config))
    history = MlflowClient(sqlite_tracking.tracking_uri).get_metric_history(run_id, "map")
    upto4 = [(s, v) for s, v in stopping.dedupe((m.step, m.value) for m in history) if s <= 4]
    assert tracked.progress.stop_state == stopping.replay(upto4, stop_cfg)
    assert tracked.progress.stop_state.best_epoch == 2 and tracked.progress.stop_state.bad_evals == 2
