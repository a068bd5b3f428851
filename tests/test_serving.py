"""Servers we start for users: `mlflow models serve` on a run's final embedding (real HTTP on
127.0.0.1) and `cli.py ui`. Each runs in its own process group, stopped by that group's id."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import torch

from hype import manifolds
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port, log_tail, stop_process_group
from tracker.checkpoints.files import load
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, _migrated_sqlite_db):
    """A finished run of a small tree with its pyfunc model, in a SQLite store of its own."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copy(_migrated_sqlite_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    graph = load_edge_csv(write_tree_closure(root / "tree_closure.csv", depth=2))
    config = TrainConfig(dim=2, epochs=5, burnin=1, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(model_name="tree", keep=2, checkpoint_root=root / "ckpt")
    out = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment="serve",
                       progress=False)
    return uri, out, root


def _env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # both servers start uvicorn through PATH
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


@contextmanager
def started(cmd, env, log_path: Path, ready_url: str):
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent,
                                start_new_session=True)
    pgid = proc.pid  # start_new_session: the child leads its own group
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[1]} exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if requests.get(ready_url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{ready_url} did not answer:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield proc, pgid
    finally:
        stop_process_group(proc, pgid)


@pytest.fixture(scope="module")
def model_server(served_run):
    uri, out, root = served_run
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"runs:/{out.run_id}/model",
           "--env-manager", "local", "--host", HOST, "--port", str(port)]
    with started(cmd, _env(uri), root / "serve.log", f"http://{HOST}:{port}/ping"):
        yield f"http://{HOST}:{port}", load(out.final_path)


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
])
def test_bad_requests_get_a_clear_400_without_a_stack_trace(model_server, columns, data, message):
    url, _ = model_server
    resp = invoke(url, columns, data)
    assert resp.status_code == 400
    body = resp.json()
    assert message in body["message"]
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "stack_trace" not in body and "Traceback" not in resp.text


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
