"""One checkpoint lifecycle for the trainer, resume and cleanup, on a real SQLite store (and a
real server) under tmp_path: the engines agree, and hints from the store are verified.

The agreement proof: a run trained with some policies, then cleaned with the same policies in
dry-run (local and tracked mode), plans zero deletions; after a real cleanup with a smaller N,
the run's tags, its manifest, its local folder and its tracked listing all say the same thing.
The attacks: an edited ``hype.checkpoint_dir`` tag that points at another run's folder or at
an unrelated canary folder steers neither cleanup nor resume: nothing in it is touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.datasets import write_tree_closure
from tracker import layout
from tracker.checkpoints.manifest import MANIFEST_NAME, Manifest
from tracker.policy.names import parse_checkpoint_name
from tracker.training.config import TrackerConfig
from tracker.training.session import run_training

POLICY = ["--keep", "3", "--keep-best", "2", "--keep-every", "4"]


@pytest.fixture
def tree(tmp_path):
    return load_edge_csv(write_tree_closure(tmp_path / "tree_closure.csv", depth=2))


def train(uri, graph, root, *, keep=3, keep_best=2, keep_every=4, epochs=12, experiment="life"):
    """A real run; monitoring the (falling) loss with mode max makes the best epochs the first
    ones after burn-in, so best K and every k keep checkpoints outside the newest N."""
    config = TrainConfig(dim=2, epochs=epochs, burnin=2, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(store_every=True,
                            model_name="tree", keep=keep, keep_best=keep_best, keep_every=keep_every,
                            checkpoint_root=root, log_pyfunc=False, monitor="loss", mode="max",
                            patience=100)
    return run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment=experiment,
                        progress=False).run_id


def cleanup(*args):
    return CliRunner().invoke(cli, ["cleanup", *args], catch_exceptions=False)


def epochs_of(names):
    return sorted(p.epoch for n in names if (p := parse_checkpoint_name(n)))


def tracked(client, run_id):
    listing = client.list_artifacts(run_id, layout.CHECKPOINT_FOLDER)
    return epochs_of(a.path.rsplit("/", 1)[-1] for a in listing)


def local(folder):
    return epochs_of(p.name for p in Path(folder).iterdir())


def manifest_epochs(folder, run_id):
    entries = Manifest.open(folder, run_id=run_id).entries().values()
    return sorted(e.epoch for e in entries if e.state == "stored")


def tag_epochs(client, run_id):
    tags = client.get_run(run_id).data.tags
    epochs = [int(e) for e in tags[layout.TAG_RETAINED_EPOCHS].split(",") if e]
    assert int(tags[layout.TAG_RETAINED]) == len(epochs)
    return epochs


def four_sides(client, run_id, folder):
    return {"tags": tag_epochs(client, run_id), "manifest": manifest_epochs(folder, run_id),
            "local": local(folder), "tracked": tracked(client, run_id)}


def snapshot(folder):
    """{name: sha256} of every file under folder: a canary that must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def planned(result) -> int:
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    return report["summary"]["deleted"]


def test_trainer_and_cleanup_agree_then_all_four_sides_agree_after_a_cleanup(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    root = tmp_path / "ckpt"
    run_id = train(uri, tree, root)
    folder = root / run_id
    client = MlflowClient(uri)
    sides = four_sides(client, run_id, folder)
    # newest 3 (10, 11, 12) + best 2 by loss-as-max (3, 4: the first after burn-in) + every 4 (4, 8)
    assert sides["tracked"] == [3, 4, 8, 10, 11, 12]
    assert sides == dict.fromkeys(sides, sides["tracked"])

    # the same policies plan nothing, in every mode
    for mode in (["--run-id", run_id, "--tracking-uri", uri], ["--directory", str(folder)],
                 ["--directory", str(root)]):
        assert planned(cleanup(*mode, *POLICY, "--dry-run", "--json")) == 0, mode

    # a smaller N, tracked mode: the four sides still say one thing
    out = cleanup("--run-id", run_id, "--tracking-uri", uri, "--keep", "1", "--keep-best", "1")
    assert out.exit_code == 0, out.output
    after = four_sides(client, run_id, folder)
    assert after["tracked"] == [3, 12]
    assert after == dict.fromkeys(after, [3, 12])
    entries = Manifest.open(folder, run_id=run_id).entries()
    assert {e for e, x in entries.items() if x.state == "deleted"} == set(range(1, 13)) - {3, 12}

    # and in local mode, from the folder the trainer wrote
    out = cleanup("--directory", str(root), "--keep", "1", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert four_sides(client, run_id, folder) == dict.fromkeys(after, [12])
    assert (folder / "tree.pth").exists()  # the final model, never deleted
    assert [a.path for a in client.list_artifacts(run_id, layout.FINAL_FOLDER)] == ["hype_model/tree.pth"]


def test_dry_run_prints_every_policy_that_keeps_a_checkpoint(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path / "ckpt")
    out = cleanup("--run-id", run_id, "--tracking-uri", uri, *POLICY, "--dry-run")
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if "tree_epoch0004.pth" in ln)
    assert "best 2 (loss=" in line and "every 4 epochs" in line
    assert "tree_epoch0012.pth: newest 3" in out.output


def test_project_root_form_finds_the_run_folders(sqlite_tracking, tree, tmp_path, monkeypatch):
    """`python cli.py cleanup --keep N` with no directory, in the folder holding checkpoints/."""
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path / "checkpoints", keep=None)
    monkeypatch.chdir(tmp_path)
    out = cleanup("--keep", "2", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert local(tmp_path / "checkpoints" / run_id) == [11, 12]
    assert tracked(MlflowClient(uri), run_id) == [11, 12]


def test_local_mode_keeps_the_best_of_a_run_folder(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    run_id = train(uri, tree, tmp_path / "ckpt", keep=None)
    out = cleanup("--directory", str(tmp_path / "ckpt" / run_id), "--keep", "2")
    assert out.exit_code == 0, out.output
    assert local(tmp_path / "ckpt" / run_id) == [3, 11, 12]  # best by loss-as-max is epoch 3


# --- hints from the store are verified --------------------------------------------------------


@pytest.fixture
def two_runs(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    root = tmp_path / "ckpt"
    a = train(uri, tree, root, keep=None, epochs=6)
    b = train(uri, tree, root, keep=None, epochs=6)
    return uri, root, a, b


def test_cleanup_through_an_edited_tag_never_touches_another_runs_folder(two_runs):
    uri, root, a, b = two_runs
    client = MlflowClient(uri)
    client.set_tag(a, layout.TAG_CHECKPOINT_DIR, str(root / b))
    before = snapshot(root / b)
    b_tracked = tracked(client, b)
    out = cleanup("--run-id", a, "--tracking-uri", uri, "--keep", "2")
    assert out.exit_code == 1
    assert f"belongs to run {b}" in out.output and f"not to run {a}" in out.output
    assert snapshot(root / b) == before and tracked(client, b) == b_tracked
    assert local(root / a) == list(range(1, 7))  # A's own copies were not found through the tag either


def test_cleanup_through_a_tag_to_a_canary_folder_touches_nothing(two_runs, tmp_path):
    uri, root, a, _ = two_runs
    canary = tmp_path / "canary"
    canary.mkdir()
    for e in range(1, 7):  # A's checkpoint names, other bytes
        (canary / f"tree_epoch{e:04d}.pth").write_bytes(b"not yours" * e)
    before = snapshot(canary)
    MlflowClient(uri).set_tag(a, layout.TAG_CHECKPOINT_DIR, str(canary))
    out = cleanup("--run-id", a, "--tracking-uri", uri, "--keep", "2")
    assert out.exit_code == 1 and "has no manifest and is not named after run" in out.output
    assert snapshot(canary) == before


def test_resume_through_an_edited_tag_is_refused_and_adopts_nothing(two_runs, tmp_path):
    uri, root, a, b = two_runs
    client = MlflowClient(uri)
    client.set_tag(a, layout.TAG_CHECKPOINT_DIR, str(root / b))
    before, b_final = snapshot(root / b), client.list_artifacts(b, layout.FINAL_FOLDER)[0].file_size
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "8", "--quiet"])
    assert r.exit_code == 1
    assert f"belongs to run {b}" in r.output and len(r.output.strip().splitlines()) == 1
    assert snapshot(root / b) == before
    assert client.list_artifacts(b, layout.FINAL_FOLDER)[0].file_size == b_final
    assert tracked(client, a) == list(range(1, 7))  # nothing of B's was uploaded as A's


def test_resume_through_a_tag_to_a_canary_folder_is_refused(two_runs, tmp_path):
    uri, root, a, _ = two_runs
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "tree_epoch0009.pth").write_bytes(b"bait")
    before = snapshot(canary)
    MlflowClient(uri).set_tag(a, layout.TAG_CHECKPOINT_DIR, str(canary))
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "8", "--quiet"])
    assert r.exit_code == 1 and "not named after run" in r.output
    assert snapshot(canary) == before


def test_a_file_whose_hash_differs_is_not_ours_and_kept(two_runs):
    uri, root, a, _ = two_runs
    victim = root / a / "tree_epoch0001.pth"
    size = victim.stat().st_size
    victim.write_bytes(b"\0" * size)  # same name and size, other bytes
    out = cleanup("--directory", str(root / a), "--keep", "2", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert victim.exists() and "not ours" in out.output and "sha256" in out.output
    assert 1 not in tracked(MlflowClient(uri), a)  # the tracked copy is the run's own: cleaned
    assert local(root / a) == [1, 5, 6]


def test_a_second_name_for_an_epoch_is_not_ours(two_runs):
    uri, root, a, _ = two_runs
    (root / a / "tree_epoch3.pth").write_bytes((root / a / "tree_epoch0003.pth").read_bytes())
    out = cleanup("--directory", str(root / a), "--keep", "1", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert (root / a / "tree_epoch3.pth").exists() and "not in the run's manifest" in out.output
    assert tracked(MlflowClient(uri), a) == [6]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"garbage" * 100), "damaged manifest"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "damaged manifest"),
])
def test_a_damaged_manifest_is_one_line_and_nothing_is_deleted(two_runs, damage, message):
    uri, root, a, _ = two_runs
    damage(root / a / MANIFEST_NAME)
    before = snapshot(root / a)
    out = cleanup("--directory", str(root / a), "--keep", "1")
    assert out.exit_code == 1 and message in out.output
    assert snapshot(root / a) == before
    assert tracked(MlflowClient(uri), a) == list(range(1, 7))
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "8", "--quiet"])
    assert r.exit_code == 1 and message in r.output


def test_checkpoint_files_record_their_run(two_runs):
    import torch

    uri, root, a, _ = two_runs
    ckpt = torch.load(root / a / "tree_epoch0006.pth", weights_only=True)
    assert ckpt["run_id"] == a
    binding = Manifest.open(root / a, run_id=a).binding
    assert binding.model_name == "tree" and binding.tracking_uri == uri


def test_through_a_tracking_server(mlflow_server_proxied, tree, tmp_path):
    uri = mlflow_server_proxied.url
    root = tmp_path / "ckpt"
    run_id = train(uri, tree, root, experiment="life-server")
    client = MlflowClient(uri)
    assert planned(cleanup("--run-id", run_id, "--tracking-uri", uri, *POLICY, "--dry-run", "--json")) == 0
    assert planned(cleanup("--directory", str(root / run_id), *POLICY, "--dry-run", "--json")) == 0
    out = cleanup("--directory", str(root / run_id), "--keep", "2", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert four_sides(client, run_id, root / run_id) == dict.fromkeys(
        ("tags", "manifest", "local", "tracked"), [11, 12])
    on_server = sorted(p.name for p in mlflow_server_proxied.artifacts_dir.rglob("tree_epoch*.pth")
                       if run_id in str(p))
    assert on_server == ["tree_epoch0011.pth", "tree_epoch0012.pth"]


# --- found by an adversarial pass ------------------------------------------------------------


def test_a_question_mark_in_the_checkpoint_path_stays_in_the_path(sqlite_tracking, tree, tmp_path):
    uri = sqlite_tracking.tracking_uri
    root = tmp_path / "data.db?v=2"
    run_id = train(uri, tree, root, epochs=3)
    assert (root / run_id / MANIFEST_NAME).stat().st_size > 0
    assert not (tmp_path / "data.db").exists()
    assert manifest_epochs(root / run_id, run_id) == [1, 2, 3]


def test_a_dry_run_writes_nothing_not_even_the_manifest(two_runs):
    uri, root, a, _ = two_runs
    (root / a / "tree_epoch0006.pth").rename(root / "aside.pth")  # gone from the folder for a moment
    before = snapshot(root / a)
    assert cleanup("--directory", str(root / a), "--keep", "1", "--dry-run").exit_code == 0
    assert snapshot(root / a) == before
    (root / "aside.pth").rename(root / a / "tree_epoch0006.pth")
    out = cleanup("--directory", str(root / a), "--keep", "1", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert local(root / a) == [6]  # the newest survived: nothing turned it into a deletion to finish


def test_resume_adopts_a_folder_from_before_manifests(two_runs):
    uri, root, a, _ = two_runs
    for p in (root / a).glob(MANIFEST_NAME + "*"):
        p.unlink()
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "8", "--quiet",
                                 "--keep-checkpoints", "3", "--keep-best", "0", "--keep-every", "0"])
    assert r.exit_code == 0, r.output
    assert "not ours" not in r.output
    assert four_sides(MlflowClient(uri), a, root / a) == dict.fromkeys(
        ("tags", "manifest", "local", "tracked"), [6, 7, 8])


def test_training_never_overwrites_a_file_that_is_not_the_runs(two_runs):
    uri, root, a, _ = two_runs
    stranger = root / a / "tree_epoch0007.pth"
    stranger.write_text("notes")
    bait = root / a / "results.pth.v1.tmp"
    bait.write_text("data")
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "8", "--quiet"])
    assert r.exit_code == 1 and "is in the way of epoch 7's checkpoint" in r.output
    assert stranger.read_text() == "notes" and bait.read_text() == "data"


def test_a_cleanup_elsewhere_is_not_undone_by_the_next_resume(two_runs):
    uri, root, a, _ = two_runs
    client = MlflowClient(uri)
    client.set_tag(a, layout.TAG_CHECKPOINT_DIR, "/elsewhere/on/another/machine")
    moved = root.parent / "moved"
    moved.mkdir()
    (root / a).rename(moved / a)  # the store's tag does not know this folder
    out = cleanup("--run-id", a, "--tracking-uri", uri, "--keep", "2", "--keep-best", "0")
    assert out.exit_code == 0, out.output
    assert tracked(client, a) == [5, 6]
    r = CliRunner().invoke(cli, ["train", "--resume", a, "--tracking-uri", uri, "--epochs", "7", "--quiet",
                                 "--checkpoint-dir", str(moved), "--keep-checkpoints", "2",
                                 "--keep-best", "0", "--keep-every", "0"])
    assert r.exit_code == 0, r.output
    assert "Stored tree_epoch0001.pth" not in r.output
    assert four_sides(client, a, moved / a) == dict.fromkeys(("tags", "manifest", "local", "tracked"), [6, 7])


def test_cleanup_repairs_stale_tags_with_nothing_to_delete(two_runs):
    uri, root, a, _ = two_runs
    client = MlflowClient(uri)
    client.set_tag(a, layout.TAG_RETAINED_EPOCHS, "1,2,3")
    assert cleanup("--run-id", a, "--tracking-uri", uri, "--keep", "20").exit_code == 0
    assert tag_epochs(client, a) == list(range(1, 7))


def test_a_replaced_file_is_reported_once_not_deleted_forever(two_runs):
    uri, root, a, _ = two_runs
    victim = root / a / "tree_epoch0001.pth"
    victim.write_bytes(b"\1" * victim.stat().st_size)
    first = cleanup("--directory", str(root / a), "--keep", "3", "--keep-best", "0", "--json")
    again = cleanup("--directory", str(root / a), "--keep", "3", "--keep-best", "0", "--json")
    assert json.loads(first.output)["summary"]["deleted"] == 3
    assert json.loads(again.output)["summary"]["deleted"] == 0
    assert victim.exists()
    assert any(s["name"] == victim.name for s in json.loads(again.output)["targets"][0]["not_ours"])


def test_a_damaged_manifest_row_is_one_line(two_runs):
    import sqlite3

    uri, root, a, _ = two_runs
    with sqlite3.connect(root / a / MANIFEST_NAME) as conn:
        conn.execute("UPDATE checkpoints SET epoch = 99 WHERE epoch = 2")
    conn.close()
    before = snapshot(root / a)
    out = cleanup("--directory", str(root / a), "--keep", "1")
    assert out.exit_code == 1 and "damaged manifest row" in out.output
    assert len(out.output.strip().splitlines()) == 1 and snapshot(root / a) == before


def test_a_named_run_that_is_skipped_exits_nonzero(two_runs):
    uri, root, a, _ = two_runs
    client = MlflowClient(uri)
    client.set_tag(a, layout.TAG_BEST_EPOCH, "two")
    out = cleanup("--run-id", a, "--tracking-uri", uri, "--keep", "1")
    assert out.exit_code == 1 and "was not cleaned" in out.output
    assert tracked(client, a) == list(range(1, 7))


def test_a_backup_copy_of_a_run_folder_is_left_alone(two_runs):
    import shutil

    uri, root, a, _ = two_runs
    shutil.copytree(root / a, root / f"{a}-backup")
    backup = snapshot(root / f"{a}-backup")
    out = cleanup("--directory", str(root), "--keep", "2", "--keep-best", "0")
    assert out.exit_code == 1 and "left alone" in out.output
    # the first folder found (sorted: the run's own) is cleaned, the copy is not touched
    assert local(root / a) == [5, 6]
    assert snapshot(root / f"{a}-backup") == backup
