"""Servers we start for users: `mlflow models serve` on a run's final embedding (real HTTP on
127.0.0.1) and `cli.py ui`. Each runs in its own process group, stopped by that group's id."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import requests
import torch
from mlflow.exceptions import MlflowException

from hype import manifolds, node_names
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port, started
from tracker.checkpoints.files import load
from tracker.serving.pyfunc_model import MAX_NEIGHBOURS_OUT, MAX_ROWS, HypeEmbedding
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, _migrated_sqlite_db):
    """A finished run of a small tree with its pyfunc model, in a SQLite store of its own."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copy(_migrated_sqlite_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    graph = load_edge_csv(write_tree_closure(root / "tree_closure.csv", depth=2))
    config = TrainConfig(dim=2, epochs=5, burnin=1, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(store_every=True, model_name="tree", keep=2, checkpoint_root=root / "ckpt")
    out = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment="serve",
                       progress=False)
    return uri, out, root


def _env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # both servers start uvicorn through PATH
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.fixture(scope="module")
def model_server(served_run):
    uri, out, root = served_run
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"runs:/{out.run_id}/model",
           "--env-manager", "local", "--host", HOST, "--port", str(port)]
    with started(cmd, _env(uri), root / "serve.log", f"http://{HOST}:{port}/ping"):
        yield f"http://{HOST}:{port}", load(out.final_path)


def _warnings(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "Warning" in ln or "WARNING" in ln]


def test_the_serve_log_has_no_mlflow_warnings(model_server, served_run):
    """predict's type hint: MLflow's "Add type hints to the `predict` method" warning, printed
    when the server loads the model's code, is gone (and with it no data validation is added)."""
    assert _warnings(served_run[2] / "serve.log") == []


def invoke(url, columns, data):
    return requests.post(f"{url}/invocations", json={"dataframe_split": {"columns": columns, "data": data}},
                         timeout=30)


def test_distances_over_http(model_server):
    url, final = model_server
    pairs = [["n.0", "n"], ["n.0.1", "n.2"], ["n", "n"]]
    resp = invoke(url, ["u", "v"], pairs)
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    index = {n: i for i, n in enumerate(final["names"])}
    emb = final["embeddings"].to(torch.float64)
    u = emb[[index[a] for a, _ in pairs]]
    v = emb[[index[b] for _, b in pairs]]
    expected = manifolds.get("poincare").distance(u, v).tolist()
    assert [(p["u"], p["v"]) for p in got] == [tuple(p) for p in pairs]
    assert [p["distance"] for p in got] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert got[2]["distance"] == pytest.approx(0.0, abs=1e-6)


def test_nearest_nodes_over_http(model_server):
    url, final = model_server
    resp = invoke(url, ["node", "k"], [["n.1", 3]])
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert [p["rank"] for p in got] == [1, 2, 3]
    emb = final["embeddings"].to(torch.float64)
    names = list(final["names"])
    i = names.index("n.1")
    d = manifolds.get("poincare").distance(emb[i].unsqueeze(0), emb)
    d[i] = float("inf")
    nearest = torch.topk(d, 3, largest=False)
    assert [p["neighbor"] for p in got] == [names[j] for j in nearest.indices.tolist()]
    assert [p["distance"] for p in got] == pytest.approx(nearest.values.tolist())


@pytest.mark.parametrize("columns, data, message", [
    (["u", "v"], [["n.0", "no.such.node"]], "unknown node(s): no.such.node"),
    (["a", "b"], [["n.0", "n"]], "expected columns (u, v) or (node, k), got ['a', 'b']"),
    (["node", "k"], [["n.0", 0]], "k must be an integer >= 1, got 0"),
    (["node", "k"], [["n.0", "many"]], "k must be an integer >= 1, got 'many'"),
    # JSON true is a bool, and a bool is an int in Python
    (["node", "k"], [["n.0", True]], "k must be an integer >= 1, got True"),
    (["u", "u", "v"], [["n.0", "n", "n.1"]], "duplicate column(s): u"),
])
def test_bad_requests_get_a_clear_400_without_a_stack_trace(model_server, columns, data, message):
    url, _ = model_server
    resp = invoke(url, columns, data)
    assert resp.status_code == 400
    body = resp.json()
    assert message in body["message"]
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "stack_trace" not in body and "Traceback" not in resp.text


def test_limits_over_http(model_server):
    url, final = model_server
    resp = invoke(url, ["u", "v"], [["n.0", "n"]] * (MAX_ROWS + 1))
    assert resp.status_code == 400
    assert f"{MAX_ROWS + 1} rows in one request; at most {MAX_ROWS}" in resp.json()["message"]
    # a huge k is clamped to the number of other nodes: all of them, ranked
    resp = invoke(url, ["node", "k"], [["n.1", 10**9]])
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert [p["rank"] for p in got] == list(range(1, len(final["names"])))
    assert {p["neighbor"] for p in got} == set(final["names"]) - {"n.1"}


N_NODES = 200  # rows of the unit-level model: MAX_NEIGHBOURS_OUT // (N_NODES - 1) < MAX_ROWS


@pytest.fixture(scope="module")
def loaded_model(tmp_path_factory):
    """HypeEmbedding.load_context on a small final-model file, without a server."""
    path = tmp_path_factory.mktemp("pyfunc") / "final.pth"
    gen = torch.Generator().manual_seed(0)
    torch.save({"embeddings": 0.5 * torch.rand(N_NODES, 2, generator=gen),
                "names": node_names.encode([f"n{i}" for i in range(N_NODES)]),
                "config": {"manifold": "poincare"}}, path)
    model = HypeEmbedding()
    model.load_context(SimpleNamespace(artifacts={"embedding": str(path)}))
    return model


def _refusal(model, df) -> str:
    with pytest.raises(MlflowException) as info:
        model.predict(None, df)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    return info.value.message


@pytest.mark.parametrize("columns, row", [(["u", "v"], ["n1", "n2"]), (["node", "k"], ["n1", 1])])
def test_rows_per_request_are_capped(loaded_model, columns, row):
    assert len(loaded_model.predict(None, pd.DataFrame([row] * MAX_ROWS, columns=columns))) == MAX_ROWS
    message = _refusal(loaded_model, pd.DataFrame([row] * (MAX_ROWS + 1), columns=columns))
    assert message == (f"{MAX_ROWS + 1} rows in one request; at most {MAX_ROWS} (MAX_ROWS): "
                       f"split it into requests of {MAX_ROWS} rows or fewer")


def test_neighbour_rows_are_capped_after_k_is_clamped(loaded_model):
    fits = MAX_NEIGHBOURS_OUT // (N_NODES - 1)  # rows of k=1e9 whose clamped k fit the limit
    out = loaded_model.predict(None, pd.DataFrame({"node": ["n1"] * fits, "k": [10**9] * fits}))
    assert len(out) == fits * (N_NODES - 1)
    assert list(out["rank"][: N_NODES - 1]) == list(range(1, N_NODES))
    assert "n1" not in set(out["neighbor"])
    message = _refusal(loaded_model, pd.DataFrame({"node": ["n1"] * (fits + 1), "k": [10**9] * (fits + 1)}))
    assert f"asks for {(fits + 1) * (N_NODES - 1):,} neighbour rows" in message
    assert f"each k clamped to {N_NODES - 1:,}" in message
    assert f"at most {MAX_NEIGHBOURS_OUT:,} per request" in message
    assert f"split it into requests whose k sum to {MAX_NEIGHBOURS_OUT:,} or less" in message


@pytest.mark.parametrize("k", [True, np.bool_(True)])
def test_a_bool_k_is_refused(loaded_model, k):
    message = _refusal(loaded_model, pd.DataFrame({"node": pd.Series(["n1"], dtype=object),
                                                   "k": pd.Series([k], dtype=object)}))
    assert message == f"k must be an integer >= 1, got {bool(k)}"


@pytest.mark.parametrize("columns, named", [
    (["u", "u", "v"], "u"),
    (["node", "k", "k", "node"], "k, node"),
])
def test_duplicate_columns_are_named(loaded_model, columns, named):
    message = _refusal(loaded_model, pd.DataFrame([["n1"] * len(columns)], columns=columns))
    assert message == f"duplicate column(s): {named}"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_payload_artifact_is_refused_without_torch_advice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "final.pth"
    torch.save({"embeddings": torch.zeros(2, 2), "names": ["a", "b"], "x": _Payload()}, path)
    with pytest.raises(MlflowException) as info:
        HypeEmbedding().load_context(SimpleNamespace(artifacts={"embedding": str(path)}))
    message = info.value.message
    assert message.startswith(f"{path}: refused to load: it holds more than tensors and plain types")
    assert message.endswith("nothing in it was run") and "\n" not in message
    assert "weights_only" not in message and "Weights only" not in message
    assert info.value.__suppress_context__  # the serve log's traceback does not show torch's own
    assert not (tmp_path / "PWNED").exists()


def test_ui_command_serves_the_store_and_stops_with_its_group(served_run):
    uri, out, root = served_run
    port = free_port()
    cmd = [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port), "--tracking-uri", uri]
    log = root / "ui.log"
    with started(cmd, _env(uri), log, f"http://{HOST}:{port}/health") as (proc, pgid):
        assert f"http://{HOST}:{port}" in log.read_text()
        resp = requests.get(f"http://{HOST}:{port}/api/2.0/mlflow/runs/get",
                            params={"run_id": out.run_id}, timeout=10)
        assert resp.status_code == 200 and resp.json()["run"]["info"]["status"] == "FINISHED"
        listed = requests.get(f"http://{HOST}:{port}/api/2.0/mlflow/artifacts/list",
                              params={"run_id": out.run_id, "path": "hype_checkpoints"}, timeout=10)
        # exactly what the run says it retains: the newest 2, plus the best when it is older
        retained = resp.json()["run"]["data"]["tags"]
        epochs = next(t["value"] for t in retained if t["key"] == "hype.retained_epochs").split(",")
        assert {"4", "5"} <= set(epochs) and len(epochs) <= 3
        assert sorted(f["path"] for f in listed.json()["files"]) == [
            f"hype_checkpoints/tree_epoch{int(e):04d}.pth" for e in sorted(epochs, key=int)]
        # SIGTERM to the command stops the server it started (in a group of its own)
        os.killpg(pgid, signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{HOST}:{port}/health", timeout=2)
    # a port already in use is a one-line error before anything starts
    with started([sys.executable, "-m", "http.server", str(port), "--bind", HOST], _env(uri),
                 root / "blocker.log", f"http://{HOST}:{port}/"):
        done = subprocess.run(cmd, env=_env(uri), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"Error: port {port} on {HOST} is in use; choose another with --port\n"


def test_serve_command_serves_a_retained_checkpoint_by_epoch(served_run):
    """`cli.py serve --run-id R --epoch E`: that epoch's weights behind `mlflow models serve`,
    with nothing downloaded by hand; the served distances are the checkpoint's."""
    uri, out, root = served_run
    run_dir = out.final_path.parent
    epoch = max(int(p.stem.rsplit("epoch", 1)[1]) for p in run_dir.glob("tree_epoch*.pth"))
    ckpt = load(run_dir / f"tree_epoch{epoch:04d}.pth")
    port = free_port()
    cmd = [sys.executable, str(ROOT / "cli.py"), "serve", "--run-id", out.run_id, "--epoch", str(epoch),
           "--tracking-uri", uri, "--port", str(port)]
    with started(cmd, _env(uri), root / "serve-epoch.log", f"http://{HOST}:{port}/ping"):
        resp = invoke(f"http://{HOST}:{port}", ["u", "v"], [["n.0", "n.1"]])
        assert resp.status_code == 200, resp.text
        index = {n: i for i, n in enumerate(node_names.decode(ckpt["names"]))}
        emb = ckpt["embeddings"].to(torch.float64)
        expected = manifolds.get("poincare").distance(emb[[index["n.0"]]], emb[[index["n.1"]]]).item()
        assert resp.json()["predictions"][0]["distance"] == pytest.approx(expected, rel=1e-12)
        log = (root / "serve-epoch.log").read_text()
        assert f"Serving run {out.run_id}: hype_checkpoints/tree_epoch{epoch:04d}.pth" in log
        # the checkpoint's download and the model made from it: no bar, no MLflow warning
        assert "Downloading artifacts" not in log
        assert _warnings(root / "serve-epoch.log") == []


def test_mlflow_models_serve_takes_a_checkpoint_model_uri_directly(served_run, tmp_path):
    """`mlflow models serve -m models:/<id>` of a retained checkpoint's LoggedModel, from a folder
    outside the checkout (hype comes from the run's hype_code.zip, the weights from the run's
    checkpoint): the served distances are that checkpoint's, and no file is stored twice."""
    from mlflow.tracking import MlflowClient

    from tracker.checkpoints.models import CheckpointModels

    uri, out, root = served_run
    client = MlflowClient(uri)
    run = client.get_run(out.run_id)
    models = CheckpointModels(client, out.run_id, run.info.experiment_id).by_epoch()
    epoch = min(models)  # the older retained one: not the final model's weights
    model_id = models[epoch][0]
    stored = {a.path for a in client.list_logged_model_artifacts(model_id)}
    assert stored == {"MLmodel", "code"}, stored  # no weights of its own
    ckpt = load(out.final_path.parent / f"tree_epoch{epoch:04d}.pth")
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{model_id}",
           "--env-manager", "local", "--host", HOST, "--port", str(port)]
    env = _env(uri)
    env.pop("PYTHONPATH", None)
    log = tmp_path / "serve-model.log"
    with started(cmd, env, log, f"http://{HOST}:{port}/ping"):  # in tmp_path
        resp = invoke(f"http://{HOST}:{port}", ["u", "v"], [["n.0", "n.1"], ["n.1", "n.0.0"]])
        assert resp.status_code == 200, resp.text
        index = {n: i for i, n in enumerate(node_names.decode(ckpt["names"]))}
        emb = ckpt["embeddings"].to(torch.float64)
        got = [p["distance"] for p in resp.json()["predictions"]]
        for (u, v), d in zip([("n.0", "n.1"), ("n.1", "n.0.0")], got, strict=True):
            expected = manifolds.get("poincare").distance(emb[[index[u]]], emb[[index[v]]]).item()
            assert d == pytest.approx(expected, rel=1e-12)
        bad = invoke(f"http://{HOST}:{port}", ["u", "v"], [["n.0", "nope"]])
        assert bad.status_code == 400 and "unknown node(s): nope" in bad.text
    bars = [ln for ln in log.read_text().splitlines() if "Downloading artifacts" in ln]
    assert bars and all("/2 [" in b for b in bars), bars  # MLflow's, for the model's 2 files only
    assert _warnings(log) == []
