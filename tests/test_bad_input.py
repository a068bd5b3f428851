"""Bad input, case by case: every mistake is one clear line on stderr ("Error: ..."), a non-zero
exit, no traceback, and nothing deleted.

The commands run in-process through click's CliRunner against one SQLite store per module, whose
runs were trained for the resume cases. Before and after each case the store's artifacts and the
runs' checkpoint folders are fingerprinted; every file there must survive unchanged.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tests.servers import free_port
from tracker import layout
from tracker.checkpoints.files import load, sha256_of
from tracker.checkpoints.manifest import MANIFEST_NAME, Entry, Manifest
from tracker.checkpoints.tracked import TrackedCheckpoints
from tracker.cleanup import runs as cleanup_tracked
from tracker.store import open as store_lock
from tracker.store.retry import RetryPolicy
from tracker.training import session
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

FAST = RetryPolicy(total_s=0.3, first_delay_s=0.1, max_delay_s=0.1)


@dataclass
class World:
    root: Path  # input files of the cases
    uri: str  # sqlite store holding the runs below
    ckpt: Path  # the runs' local checkpoint folders (DIR/<run_id>)
    artifacts: Path  # the store's artifacts
    runs: dict  # case name -> run id
    marker: Path  # a pickle payload would create this file

    @property
    def tree(self) -> Path:
        return self.root / "tree_closure.csv"

    def run_dir(self, key: str) -> Path:
        return self.ckpt / self.runs[key]

    def newest(self, key: str) -> Path:
        return max(self.run_dir(key).glob("tree_epoch*.pth"))


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _train(uri, graph, ckpt, *, experiment="bad-input", epochs=2, keep=1, **config):
    return run_training(
        uri=uri, graph=graph,
        config=TrainConfig(epochs=epochs, burnin=1, eval_every=1, negs=4, lr=1.0, **{"dim": 2, **config}),
        tconfig=TrackerConfig(store_every=True, model_name="tree", keep=keep, keep_best=False, monitor="loss",
                              patience=100, checkpoint_root=ckpt, log_pyfunc=False),
        experiment=experiment, progress=False,
    ).run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory, _migrated_sqlite_db) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copy(_migrated_sqlite_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    graph = load_edge_csv(write_tree_closure(root / "tree_closure.csv", depth=2))
    ckpt = root / "ckpt"
    runs = {key: _train(uri, graph, ckpt) for key in ("gone", "dim", "manifold", "corrupt")}
    runs["keep_all"] = _train(uri, graph, ckpt, epochs=3, keep=None)  # only ever snapshotted
    donors = {"dim": _train(uri, graph, ckpt, experiment="donors", dim=3),
              "manifold": _train(uri, graph, ckpt, experiment="donors", manifold="lorentz")}
    runs["dim3"] = donors["dim"]  # a source of another geometry for --init-from
    w = World(root, uri, ckpt, root / "mlartifacts", runs, root / "PWNED")
    client = MlflowClient(uri)
    # a run hype did not make (a plain mlflow.start_run), finished
    plain = client.create_run(client.get_experiment_by_name("bad-input").experiment_id)
    client.log_metric(plain.info.run_id, "map", 0.5, step=1)
    client.set_terminated(plain.info.run_id, "FINISHED")
    runs["plain"] = plain.info.run_id
    # an evaluate run of `mlflow run` (a project entry point that is not hype's training), finished
    evaluate = client.create_run(client.get_experiment_by_name("bad-input").experiment_id,
                                 tags={"mlflow.project.entryPoint": "evaluate"})
    client.log_metric(evaluate.info.run_id, "map", 0.5, step=1)
    client.set_terminated(evaluate.info.run_id, "FINISHED")
    runs["evaluate"] = evaluate.info.run_id
    # a hype run killed mid-training: RUNNING, with checkpoints (a leftover MLFLOW_RUN_ID names it)
    runs["running"] = _train(uri, graph, ckpt)
    client.update_run(runs["running"], status="RUNNING")
    # someone's own run in progress (a plain start_run that logged a metric): not for us to adopt
    busy = client.create_run(client.get_experiment_by_name("bad-input").experiment_id)
    client.log_metric(busy.info.run_id, "accuracy", 0.5, step=1)
    runs["busy"] = busy.info.run_id

    # "gone": every checkpoint deleted on both sides (the final model stays)
    store = TrackedCheckpoints(runs["gone"], client=client)
    for name in store.list():
        store.delete(name)
    for p in w.run_dir("gone").glob("tree_epoch*.pth"):
        p.unlink()
    # "dim" / "manifold": the newest checkpoint, on both sides and in the run's manifest, is one
    # of another dim / manifold (as if the run's params had been edited): check_compatible refuses
    for key, donor in donors.items():
        victim = w.newest(key)
        ckpt_obj = torch.load(ckpt / donor / victim.name, weights_only=True)
        ckpt_obj["run_id"] = runs[key]
        torch.save(ckpt_obj, victim)
        epoch = int(victim.stem.rsplit("epoch", 1)[1])
        Manifest.open(victim.parent, run_id=runs[key]).record(
            Entry(epoch, victim.name, victim.stat().st_size, sha256_of(victim), "stored"))
        TrackedCheckpoints(runs[key], client=client).upload(victim)
    # "corrupt": the newest checkpoint is truncated, locally and in the store
    for p in [w.newest("corrupt"), *w.artifacts.rglob(f"{runs['corrupt']}/**/tree_epoch*.pth")]:
        p.write_bytes(p.read_bytes()[:200])

    (root / "malformed.csv").write_text("id1,id2,weight\na,b,1\nc,d\n")
    (root / "bad_weight.csv").write_text("id1,id2,weight\na,b,heavy\n")
    (root / "empty.csv").write_text("")
    (root / "self_loops.csv").write_text("id1,id2,weight\na,a,1\nb,b,1\n")
    (root / "long_name.csv").write_text("id1,id2,weight\n" + "a" * 131_073 + ",b,1\n")
    (root / "long_parent.csv").write_text("child,parent\n" + "a" * 131_073 + ",b\n")
    # a store whose first creation was killed by an older hype: some tables, no runs
    with sqlite3.connect(root / "half.db") as conn:
        conn.execute("CREATE TABLE secrets (x)")
    (root / "a_file").write_text("not a directory\n")
    shutil.copy(root / "tree_closure.csv", root / "snap_epoch3.csv")  # its model name would be snap_epoch3
    good = load(w.newest("keep_all"))
    torch.save(good, root / "good.pth")
    (root / "truncated.pth").write_bytes((root / "good.pth").read_bytes()[:300])
    (root / "not_a_checkpoint.pth").write_text("id1,id2,weight\na,b,1\n")
    torch.save({**good, "extra": _Payload(w.marker)}, root / "payload.pth")
    (root / "other_closure.csv").write_text("id1,id2,weight\nzebra,animal,1\nlion,animal,1\n")
    return w


# --- what every case must show -----------------------------------------------------------


def _fingerprint(*folders: Path) -> dict[str, str]:
    """Every file's hash; the runs' manifests are the runs' own records, and a failed resume may
    note in them what it found gone (bookkeeping, never a checkpoint)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(MANIFEST_NAME)}


def _assert_clear_failure(result, message: str) -> str:
    shown = "".join(traceback.format_exception(result.exception)) if result.exception else ""
    assert isinstance(result.exception, SystemExit) or result.exception is None, shown
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == [lines[-1]], result.stderr  # one error line, and it is the last
    assert message in lines[-1], lines[-1]
    return lines[-1]


def _run_count(w: World) -> int:
    import sqlite3

    with sqlite3.connect(w.root / "mlflow.db") as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- the matrix ----------------------------------------------------------------------------

TRAIN = ["train", "--dim", "2", "--epochs", "2", "--quiet", "--no-pyfunc"]


def _train_args(w: World, *extra):
    return [*TRAIN, "--tracking-uri", w.uri, "--checkpoint-dir", w.ckpt, "--experiment", "bad-input",
            *extra]


def _resume(w: World, key: str):
    # the world's runs are FINISHED after 2 epochs: asking for more is what reaches their checkpoints
    return ["train", "--resume", w.runs[key], "--tracking-uri", w.uri, "--quiet", "--epochs", "5"]


def _with_run_id(w: World, monkeypatch, key: str):
    """A leftover MLFLOW_RUN_ID in the environment, naming one of the world's runs."""
    monkeypatch.setenv("MLFLOW_RUN_ID", w.runs[key])
    return _train_args(w, "--dataset", w.tree)


def _unreachable(monkeypatch):
    # MLflow's own HTTP retries, then ours, would wait minutes for a port nobody listens on.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(session, "open_tracking_store",
                        functools.partial(store_lock.open_tracking_store, probe=FAST))
    monkeypatch.setattr(cleanup_tracked, "RETRY", FAST)
    return f"http://127.0.0.1:{free_port()}"


def _unreachable_at(monkeypatch, template: str) -> str:
    """_unreachable's patches, for another form of URI: {port} in template is a free port."""
    _unreachable(monkeypatch)
    return template.format(port=free_port())


CASES = {
    # data
    "csv-malformed": (lambda w, mp: _train_args(w, "--dataset", w.root / "malformed.csv"),
                      "malformed.csv:3: expected 3 fields, got 2"),
    "csv-weight-not-a-number": (lambda w, mp: _train_args(w, "--dataset", w.root / "bad_weight.csv"),
                                "bad_weight.csv:2: weight 'heavy' is not a number"),
    "csv-empty": (lambda w, mp: _train_args(w, "--dataset", w.root / "empty.csv"), "empty file"),
    "csv-self-loops-only": (lambda w, mp: _train_args(w, "--dataset", w.root / "self_loops.csv"),
                            "self_loops.csv:2: self-loop 'a' -> 'a'"),
    "csv-missing": (lambda w, mp: _train_args(w, "--dataset", w.root / "nope.csv"), "no such file"),
    "csv-field-too-long": (lambda w, mp: _train_args(w, "--dataset", w.root / "long_name.csv"),
                           "long_name.csv:2: a field is longer than 131072 characters"),
    "closure-field-too-long": (
        lambda w, mp: ["data", "closure", "--input", w.root / "long_parent.csv", "-o", w.root / "out.csv"],
        "long_parent.csv (csv): line 2: a field is longer than 131072 characters"),
    # settings
    "manifold-unknown": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--manifold", "hyperbolic"),
                         "'hyperbolic' is not one of 'poincare', 'lorentz', 'euclidean'"),
    "dim-zero": (lambda w, mp: [*_train_args(w, "--dataset", w.tree), "--dim", "0"],
                 "Invalid dim: 0 (must be > 0)"),
    "dim-negative": (lambda w, mp: [*_train_args(w, "--dataset", w.tree), "--dim", "-4"],
                     "Invalid dim: -4 (must be > 0)"),
    "lr-zero": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--lr", "0"), "Invalid lr: 0.0"),
    "lr-negative": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--lr", "-0.3"), "Invalid lr: -0.3"),
    "keep-checkpoints-negative": (
        lambda w, mp: _train_args(w, "--dataset", w.tree, "--keep-checkpoints", "-2"), "-2 is negative"),
    "cleanup-keep-zero": (lambda w, mp: ["cleanup", "--directory", w.run_dir("keep_all"), "--keep", "0"],
                          "0 would delete every checkpoint"),
    "cleanup-keep-negative-tracked": (
        lambda w, mp: ["cleanup", "--experiment", "bad-input", "--keep", "-1", "--tracking-uri", w.uri],
        "-1 would delete every checkpoint"),
    # directories
    "directory-missing": (lambda w, mp: ["cleanup", "--directory", w.root / "nope", "--keep", "1"],
                          "no such directory"),
    "directory-is-a-file": (lambda w, mp: ["cleanup", "--directory", w.root / "a_file", "--keep", "1"],
                            "not a directory"),
    "checkpoint-dir-under-a-file": (
        lambda w, mp: [*_train_args(w, "--dataset", w.tree), "--checkpoint-dir", w.root / "a_file" / "ckpt"],
        "a_file/ckpt: Not a directory"),
    # resume
    "epochs-zero": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--epochs", "0"), "Invalid epochs: 0"),
    "lr-inf": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--lr", "inf"), "Invalid lr: inf"),
    "seed-negative": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--seed", "-1"), "Invalid seed: -1"),
    "model-name-blank": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--model-name", " "),
                         "model name is empty"),
    "model-name-like-a-checkpoint": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--model-name",
                                                               "snap_epoch3"), "ends like a checkpoint"),
    "dataset-name-like-a-checkpoint": (lambda w, mp: _train_args(w, "--dataset", w.root / "snap_epoch3.csv"),
                                       "ends like a checkpoint"),
    "monitor-never-logged": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--monitor", "mapp"),
                             "'mapp' is never logged by a run; choose from map, mean_rank, loss"),
    "resume-not-a-hype-run": (lambda w, mp: [*_resume(w, "plain"), "--dataset", w.tree],
                              "was not made by hype train"),
    "resume-an-mlflow-run-evaluate-run": (lambda w, mp: [*_resume(w, "evaluate"), "--dataset", w.tree],
                                          "entry point 'evaluate'"),
    "mlflow-run-id-of-a-running-hype-run-that-trained": (lambda w, mp: _with_run_id(w, mp, "running"),
                                                         "which already trained"),
    "mlflow-run-id-of-a-running-run-with-metrics": (lambda w, mp: _with_run_id(w, mp, "busy"),
                                                    "a RUNNING run that already logged metrics (accuracy)"),
    "mlflow-run-id-of-a-finished-hype-run": (lambda w, mp: _with_run_id(w, mp, "keep_all"),
                                             "names a FINISHED run"),
    "mlflow-run-id-of-a-plain-finished-run": (lambda w, mp: _with_run_id(w, mp, "plain"),
                                              "only a run that `mlflow run` just created is trained into"),
    "resume-unknown-run": (lambda w, mp: ["train", "--resume", "0" * 32, "--tracking-uri", w.uri],
                           f"no run with id '{'0' * 32}'"),
    "resume-checkpoints-all-deleted": (lambda w, mp: _resume(w, "gone"), "no retained checkpoint"),
    "resume-other-dim": (lambda w, mp: _resume(w, "dim"), "checkpoint has dim=3, the run asks for dim=2"),
    "resume-other-manifold": (lambda w, mp: _resume(w, "manifold"),
                              "checkpoint has manifold='lorentz', the run asks for manifold='poincare'"),
    "resume-truncated": (lambda w, mp: _resume(w, "corrupt"),
                         "the tracking store's copy does not load either"),
    "from-epoch-not-retained": (lambda w, mp: [*_resume(w, "keep_all"), "--from-epoch", "0"],
                                "holds no checkpoint of that epoch (retained epochs: 1, 2, 3)"),
    "from-epoch-without-resume": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--from-epoch", "2"),
                                  "needs --resume RUN_ID"),
    "init-from-with-resume": (lambda w, mp: [*_resume(w, "keep_all"), "--init-from", w.runs["dim"]],
                              "cannot be combined with --resume"),
    "init-from-other-dim": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--init-from", w.runs["dim3"]),
                            "has dim=3, this run asks for dim=2; a warm start needs the same geometry"),
    "init-from-unknown-run": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--init-from", "0" * 32),
                              f"--init-from: no run with id '{'0' * 32}'"),
    "init-from-malformed": (lambda w, mp: _train_args(w, "--dataset", w.tree, "--init-from", "banana"),
                            "expected RUN_ID[:EPOCH] (a 32-hex run id) or a checkpoint file"),
    "init-from-truncated-file": (
        lambda w, mp: _train_args(w, "--dataset", w.tree, "--init-from", w.root / "truncated.pth"),
        "not a readable checkpoint"),
    "init-from-epoch-not-retained": (
        lambda w, mp: _train_args(w, "--dataset", w.tree, "--init-from", f"{w.runs['keep_all']}:9"),
        "holds no checkpoint of epoch 9 (retained epochs: 1, 2, 3)"),
    "init-from-no-common-node": (
        lambda w, mp: _train_args(w, "--dataset", w.root / "other_closure.csv", "--init-from",
                                  w.runs["keep_all"]),
        "no node of this dataset is in the checkpoint"),
    # tracking URIs
    "store-half-created-train": (
        lambda w, mp: [*TRAIN, "--dataset", w.tree, "--tracking-uri", f"sqlite:///{w.root / 'half.db'}"],
        "half.db is a half-created tracking store"),
    "store-half-created-cleanup": (
        lambda w, mp: ["cleanup", "--all-experiments", "--keep", "1", "--tracking-uri",
                       f"sqlite:///{w.root / 'half.db'}"], "move it aside (mv "),
    "uri-unreachable-train": (lambda w, mp: [*TRAIN, "--dataset", w.tree, "--tracking-uri", _unreachable(mp)],
                              "no answer within 0.3 s"),
    "uri-unreachable-cleanup": (
        lambda w, mp: ["cleanup", "--all-experiments", "--tracking-uri", _unreachable(mp)],
        "cannot reach tracking server http://127.0.0.1:"),
    "uri-bad-port": (lambda w, mp: [*TRAIN, "--dataset", w.tree, "--tracking-uri", "http://127.0.0.1:99999"],
                     "malformed tracking URI 'http://127.0.0.1:99999': bad port"),
    "uri-unknown-scheme": (lambda w, mp: [*TRAIN, "--dataset", w.tree, "--tracking-uri", "ftp://host/x"],
                           "unsupported tracking URI 'ftp://host/x'"),
    "uri-sqlite-two-slashes": (lambda w, mp: ["cleanup", "--run-id", "x", "--tracking-uri", "sqlite://m.db"],
                               "expected sqlite:///PATH"),
    "uri-file-cleanup": (
        lambda w, mp: ["cleanup", "--run-id", w.runs["keep_all"], "--tracking-uri",
                       (w.root / "runs").as_uri()],
        "names MLflow's file store (a plain path or file:), which MLflow 3 deprecated and hype does not "
        "support: use a SQLite database, e.g. sqlite:///"),
    "uri-directory-export": (  # the runs' own checkpoint folder: MLflow would write a store into it
        lambda w, mp: ["export", "--run-id", w.runs["keep_all"], "-o", w.root / "o.tsv",
                       "--tracking-uri", w.ckpt],
        "names MLflow's file store (a plain path or file:)"),
    "uri-mysql-evaluate": (
        lambda w, mp: ["evaluate", "--run-id", w.runs["keep_all"], "--tracking-uri", "mysql://hype:pw@127.0.0.1/m"],
        "No module named 'MySQLdb' (hype installs no MySQL driver: pip install pymysql"),
    "uri-postgres-unreachable-cleanup": (
        lambda w, mp: ["cleanup", "--all-experiments", "--tracking-uri",
                       _unreachable_at(mp, "postgresql+psycopg2://hype:pw@127.0.0.1:{port}/mlflow")],
        "cannot connect to postgresql+psycopg2://***@127.0.0.1:"),
    "uri-sqlite-directory-train": (
        lambda w, mp: [*TRAIN, "--dataset", w.tree, "--tracking-uri", f"sqlite:///{w.ckpt}"],
        "ckpt is a directory; give a database file path, e.g. sqlite:///"),
    "uri-password-with-slash": (
        lambda w, mp: ["cleanup", "--all-experiments", "--tracking-uri", "http://hype:pa55/w0rd-s3cret@127.0.0.1:5000"],
        "malformed tracking URI 'http://***@127.0.0.1:5000': its user name or password holds '/'"),
    "uri-password-with-at": (
        lambda w, mp: ["cleanup", "--all-experiments", "--tracking-uri",
                       _unreachable_at(mp, "http://hype:pa55@w0rd-s3cret@127.0.0.1:{port}")],
        "cannot reach tracking server http://***@127.0.0.1:"),
    # checkpoints given to export / evaluate
    "export-truncated": (lambda w, mp: ["export", w.root / "truncated.pth", "-o", w.root / "o.tsv"],
                         "not a readable checkpoint"),
    "export-not-a-checkpoint": (
        lambda w, mp: ["export", w.root / "not_a_checkpoint.pth", "-o", w.root / "o.tsv"],
        "not written by torch.save: it starts with b'id1,'"),
    "export-missing-file": (lambda w, mp: ["export", w.root / "nope.pth", "-o", w.root / "o.tsv"],
                            "does not exist"),
    "evaluate-truncated": (lambda w, mp: ["evaluate", w.root / "truncated.pth", "--dataset", w.tree],
                           "not a readable checkpoint"),
    "evaluate-not-a-checkpoint": (
        lambda w, mp: ["evaluate", w.root / "not_a_checkpoint.pth", "--dataset", w.tree],
        "not written by torch.save"),
    "evaluate-other-dataset": (
        lambda w, mp: ["evaluate", w.root / "good.pth", "--dataset", w.root / "other_closure.csv"],
        "nodes are not in the embedding"),
    "export-pickle-payload": (lambda w, mp: ["export", w.root / "payload.pth", "-o", w.root / "o.tsv"],
                              "refused to load"),
    "evaluate-pickle-payload": (lambda w, mp: ["evaluate", w.root / "payload.pth", "--dataset", w.tree],
                                "refused to load"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line_and_deletes_nothing(world, case, monkeypatch):
    make_args, message = CASES[case]
    before = _fingerprint(world.ckpt, world.artifacts)
    assert len([p for p in before if p.endswith(".pth")]) >= 10
    runs_before = _run_count(world)
    line = _assert_clear_failure(_invoke(make_args(world, monkeypatch)), message)
    assert _run_count(world) == runs_before  # no run is created for input that can be checked first
    print(f"{case}: {line}")  # the matrix as users see it: pytest -s -k one_clear_line
    assert _fingerprint(world.ckpt, world.artifacts) == before
    assert not world.marker.exists()  # no pickle payload ever ran
    assert not (world.root / "o.tsv").exists()


@pytest.mark.parametrize("case", ["uri-password-with-slash", "uri-password-with-at"])
def test_no_part_of_a_password_is_shown(world, case, monkeypatch):
    make_args, message = CASES[case]
    result = _invoke(make_args(world, monkeypatch))
    _assert_clear_failure(result, message)
    assert "pa55" not in result.output and "w0rd-s3cret" not in result.output, result.output


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_bad_dataset_path_is_reported_before_torch_and_mlflow_load(tmp_path, kind):
    """Those imports take seconds; a mistyped --dataset must not wait for them. A fresh
    interpreter, since this process has both loaded already."""
    path = tmp_path / "nope.csv"
    if kind == "directory":
        path.mkdir()
    probe = ("import sys\n"
             "from click.testing import CliRunner\n"
             "from cli import cli\n"
             f"r = CliRunner().invoke(cli, ['train', '--dataset', {str(path)!r}])\n"
             "print(r.exit_code, r.output.strip())\n"
             "print(sorted(m for m in ('torch', 'mlflow', 'numba') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=layout.PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    expected = "no such file" if kind == "missing" else "is a directory, expected a file"
    assert out[0] == f"1 Error: {path}: {expected}", out
    assert out[1] == "[]", out


def test_unreadable_directory(world, tmp_path, monkeypatch):
    """Root ignores file modes, so for root a directory the kernel refuses to list is needed:
    /proc/1/map_files needs CAP_SYS_ADMIN even for root. Where that lists (or is missing),
    os.scandir is made to fail for the directory instead."""
    target = tmp_path / "locked"
    target.mkdir()
    (target / "m_epoch0001.pth").write_bytes(b"x")
    target.chmod(0)
    try:
        try:
            os.listdir(target)
        except PermissionError:
            pass  # not root: the mode is enough
        else:
            target = _root_unreadable_directory(target, monkeypatch)
        before = _fingerprint(world.ckpt)
        _assert_clear_failure(_invoke(["cleanup", "--directory", target, "--keep", "1"]),
                              f"cannot read directory {target}: Permission denied")
        assert _fingerprint(world.ckpt) == before
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert (tmp_path / "locked" / "m_epoch0001.pth").exists()


def _root_unreadable_directory(fallback: Path, monkeypatch) -> Path:
    proc = Path("/proc/1/map_files")
    try:
        os.listdir(proc)
    except PermissionError:
        return proc
    except OSError:
        pass
    real = os.scandir

    def refuse(path="."):
        if Path(path) == fallback:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refuse)
    return fallback


def test_disk_full_while_saving_keeps_the_last_checkpoint_and_resumes(sqlite_tracking, tmp_path, monkeypatch):
    """torch.save raises ENOSPC for epoch 3's checkpoint: one line that says how to resume, the
    run is FAILED, epoch 2 is kept on both sides (retention had deleted epoch 1), no partial file."""
    graph_path = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    real_save = torch.save

    def full(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 3 and not obj.get("final"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    args = [*TRAIN, "--epochs", "4", "--burnin", "1", "--dataset", graph_path, "--keep-checkpoints", "1",
            "--no-keep-best", "--tracking-uri", sqlite_tracking.tracking_uri, "--checkpoint-dir",
            tmp_path / "ckpt"]
    line = _assert_clear_failure(_invoke(args), "No space left on device")
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    assert f"--resume {run_dir.name}" in line
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert client.get_run(run_dir.name).info.status == "FAILED"
    assert sorted(p.name for p in run_dir.iterdir()) == [MANIFEST_NAME, "tree_epoch0002.pth"]
    tracked = [a.path for a in client.list_artifacts(run_dir.name, layout.CHECKPOINT_FOLDER)]
    assert tracked == [f"{layout.CHECKPOINT_FOLDER}/tree_epoch0002.pth"]
    load(run_dir / "tree_epoch0002.pth")

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    result = _invoke(["train", "--resume", run_dir.name, "--tracking-uri", sqlite_tracking.tracking_uri,
                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert client.get_run(run_dir.name).info.status == "FINISHED"
    assert sorted(p.name for p in run_dir.iterdir()) == [MANIFEST_NAME, "tree.pth", "tree_epoch0004.pth"]


def test_resume_uses_the_stores_copy_and_keeps_a_damaged_local_one(sqlite_tracking, tmp_path):
    """A local copy that is not what the manifest recorded is not ours to overwrite or delete:
    resume reads the store's copy beside it, and retention reports the file and leaves it."""
    graph = load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv", depth=2))
    run_id = _train(sqlite_tracking.tracking_uri, graph, tmp_path / "ckpt", epochs=2)
    local = tmp_path / "ckpt" / run_id / "tree_epoch0002.pth"
    damaged = local.read_bytes()[:200]
    local.write_bytes(damaged)
    result = _invoke(["train", "--resume", run_id, "--epochs", "3", "--tracking-uri",
                      sqlite_tracking.tracking_uri, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Resuming run" in result.output and "from tree_epoch0002.pth" in result.output
    assert "not ours" in result.output
    assert sorted(p.name for p in local.parent.iterdir()) == [
        MANIFEST_NAME, "tree.pth", "tree_epoch0002.pth", "tree_epoch0003.pth"]
    assert local.read_bytes() == damaged  # left exactly as it was
    client = MlflowClient(sqlite_tracking.tracking_uri)
    assert [a.path for a in client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)] == [
        f"{layout.CHECKPOINT_FOLDER}/tree_epoch0003.pth"]


# --- names with unicode and spaces: a success case --------------------------------------------


def test_unicode_and_spaces_in_checkpoint_names(sqlite_tracking, tmp_path):
    folder = tmp_path / "dossier été"
    folder.mkdir()
    model = "mamífero grande ü"
    for e in range(1, 5):
        (folder / f"{model}_epoch{e:04d}.pth").write_bytes(b"x" * 10)
    (folder / f"{model}.pth").write_bytes(b"final")
    result = _invoke(["cleanup", "--directory", folder, "--keep", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{model}.pth", f"{model}_epoch0003.pth", f"{model}_epoch0004.pth"])
    assert f"deleted       {model}_epoch0001.pth (10 B)" in result.output

    # the same names through training and tracked cleanup
    graph_path = write_tree_closure(tmp_path / "tree_closure.csv", depth=2)
    result = _invoke([*TRAIN, "--epochs", "3", "--burnin", "1", "--dataset", graph_path, "--model-name",
                      model, "--keep-checkpoints", "all", "--monitor", "loss", "--no-keep-best",
                      "--tracking-uri", sqlite_tracking.tracking_uri, "--checkpoint-dir", tmp_path / "ckpt"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    result = _invoke(["cleanup", "--run-id", run_dir.name, "--keep", "1", "--tracking-uri",
                      sqlite_tracking.tracking_uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(sqlite_tracking.tracking_uri)
    tracked = sorted(a.path.rsplit("/", 1)[-1]
                     for a in client.list_artifacts(run_dir.name, layout.CHECKPOINT_FOLDER))
    best = int(client.get_run(run_dir.name).data.tags[layout.TAG_BEST_EPOCH])
    kept = sorted({f"{model}_epoch{e:04d}.pth" for e in (3, best)})  # newest 1 + best
    assert tracked == kept
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([MANIFEST_NAME, f"{model}.pth", *kept])
    assert [a.path for a in client.list_artifacts(run_dir.name, layout.FINAL_FOLDER)] == [
        f"{layout.FINAL_FOLDER}/{model}.pth"]
