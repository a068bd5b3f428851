"""The local cleanup engine, against real folders under tmp_path."""

import json
import os

import pytest

from tracker.cleanup.local import (
    CleanupError,
    Plan,
    execute,
    local_deleter,
    plan_groups,
    plan_local,
    render_text,
)
from tracker.policy.retention import CheckpointRecord


def write(directory, name, size=100):
    path = directory / name
    path.write_bytes(b"x" * size)
    return path


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def deleted_names(report):
    return [o.decision.record.name for o in report.deleted]


def test_epoch_format_keeps_newest(tmp_path):
    for e in range(1, 6):
        write(tmp_path, f"mammals_epoch{e:04d}.pth", size=1000 * e)
    report = execute(plan_local(tmp_path, keep=2), dry_run=False)
    assert names(tmp_path) == ["mammals_epoch0004.pth", "mammals_epoch0005.pth"]
    assert report.ok
    assert deleted_names(report) == [f"mammals_epoch{e:04d}.pth" for e in (1, 2, 3)]
    assert report.bytes_freed == 1000 + 2000 + 3000


def test_poincare_format_orders_by_epoch_not_text(tmp_path):
    # as text, "m.pth.10" < "m.pth.9"; by epoch 10 is the newest
    for e in (1, 2, 9, 10):
        write(tmp_path, f"m.pth.{e}")
    execute(plan_local(tmp_path, keep=2), dry_run=False)
    assert names(tmp_path) == ["m.pth.10", "m.pth.9"]


def test_ignores_modification_times(tmp_path):
    # the oldest epoch was touched last: it is still the oldest
    for e in (1, 2, 3):
        write(tmp_path, f"m_epoch{e}.pth")
    os.utime(tmp_path / "m_epoch1.pth", (2_000_000_000, 2_000_000_000))
    execute(plan_local(tmp_path, keep=1), dry_run=False)
    assert names(tmp_path) == ["m_epoch3.pth"]


def test_mixed_models_in_one_folder(tmp_path):
    for e in range(1, 5):
        write(tmp_path, f"mammals_epoch{e:04d}.pth")
        write(tmp_path, f"nouns v2_epoch{e}.pth")
        write(tmp_path, f"legacy.pth.{e}")
    plan = plan_local(tmp_path, keep=2)
    assert [g.model for g in plan.groups] == ["legacy", "mammals", "nouns v2"]
    assert all(g.kept_epochs == (3, 4) and g.found == 4 for g in plan.groups)
    execute(plan, dry_run=False)
    assert names(tmp_path) == [
        "legacy.pth.3",
        "legacy.pth.4",
        "mammals_epoch0003.pth",
        "mammals_epoch0004.pth",
        "nouns v2_epoch3.pth",
        "nouns v2_epoch4.pth",
    ]


def test_never_deletes_look_alikes_or_the_final_model(tmp_path):
    for e in range(1, 4):
        write(tmp_path, f"m_epoch{e}.pth")
    untouchable = [
        "m.pth",  # the final model
        "m_epoch1.pth.tmp",
        "notes_epoch1.txt",
        "m_epoch1.PTH",
        "README.md",
        "_epoch1.pth",
        ".._epoch1.pth",
    ]
    for name in untouchable:
        write(tmp_path, name)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "m_epoch0.pth")  # not recursive
    plan = plan_local(tmp_path, keep=1)
    execute(plan, dry_run=False)
    assert names(tmp_path) == sorted(untouchable + ["m_epoch3.pth", "sub"])
    assert names(tmp_path / "sub") == ["m_epoch0.pth"]
    assert [(s.name, s.reason) for s in plan.skipped] == [("m.pth", "final model: never deleted")]


def test_directory_named_like_a_checkpoint(tmp_path):
    (tmp_path / "m_epoch0001.pth").mkdir()
    write(tmp_path / "m_epoch0001.pth", "inside")
    write(tmp_path, "m_epoch0002.pth")
    write(tmp_path, "m_epoch0003.pth")
    plan = plan_local(tmp_path, keep=1)
    report = execute(plan, dry_run=False)
    assert (tmp_path / "m_epoch0001.pth" / "inside").exists()
    assert names(tmp_path) == ["m_epoch0001.pth", "m_epoch0003.pth"]
    assert deleted_names(report) == ["m_epoch0002.pth"]
    assert "directory" in plan.skipped[0].reason


def test_symlink_outside_the_folder_never_followed_or_deleted(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = write(outside, "precious.pth", size=5000)
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(target, run / "m_epoch0001.pth")
    write(run, "m_epoch0002.pth")
    write(run, "m_epoch0003.pth")
    plan = plan_local(run, keep=1)
    execute(plan, dry_run=False)
    assert target.read_bytes() == b"x" * 5000
    assert (run / "m_epoch0001.pth").is_symlink()
    assert names(run) == ["m_epoch0001.pth", "m_epoch0003.pth"]
    assert [s.name for s in plan.skipped] == ["m_epoch0001.pth"]
    assert "symlink" in plan.skipped[0].reason


def test_symlink_inside_the_folder_is_skipped_too(tmp_path):
    # a link to one of our own checkpoints: the link is left, the real file is decided on
    write(tmp_path, "m_epoch0001.pth")
    write(tmp_path, "m_epoch0002.pth")
    os.symlink(tmp_path / "m_epoch0001.pth", tmp_path / "m_epoch0005.pth")
    os.symlink("missing", tmp_path / "m_epoch0006.pth")  # dangling
    execute(plan_local(tmp_path, keep=1), dry_run=False)
    assert names(tmp_path) == ["m_epoch0002.pth", "m_epoch0005.pth", "m_epoch0006.pth"]


def test_dry_run_deletes_nothing_and_reports_exact_bytes(tmp_path):
    sizes = {1: 80_896, 2: 1234, 3: 7, 4: 99}
    for e, size in sizes.items():
        write(tmp_path, f"m_epoch{e:04d}.pth", size=size)
    before = names(tmp_path)
    report = execute(plan_local(tmp_path, keep=1), dry_run=True)
    assert names(tmp_path) == before
    assert report.bytes_freed == 80_896 + 1234 + 7
    assert [o.status for o in report.outcomes] == ["would delete"] * 3
    text = render_text(report)
    assert "dry run" in text
    assert "m_epoch0001.pth (79 KB)" in text
    assert text.splitlines()[-1] == "Would delete 3 files, would free 80 KB"
    assert report.to_json()["summary"] == {"deleted": 3, "failed": 0, "bytes": 82_137}
    # the same plan, executed for real, frees the same
    assert execute(plan_local(tmp_path, keep=1), dry_run=False).bytes_freed == 82_137


def test_keep_one_and_keep_more_than_found(tmp_path):
    for e in (3, 1, 2):
        write(tmp_path, f"m_epoch{e}.pth")
    assert execute(plan_local(tmp_path, keep=10), dry_run=False).outcomes == ()
    assert len(names(tmp_path)) == 3
    execute(plan_local(tmp_path, keep=1), dry_run=False)
    assert names(tmp_path) == ["m_epoch3.pth"]


def test_keep_none_keeps_everything(tmp_path):
    for e in (1, 2):
        write(tmp_path, f"m_epoch{e}.pth")
    plan = plan_local(tmp_path, keep=None)
    assert plan.deletions == ()
    assert plan.groups[0].kept[0].reason == "retention disabled"


def test_best_and_protected_epochs_survive(tmp_path):
    for e in range(1, 8):
        write(tmp_path, f"m_epoch{e}.pth")
        write(tmp_path, f"n_epoch{e}.pth")
    plan = plan_local(
        tmp_path,
        keep=2,
        best={"m": 2, "other": 1},
        protect={"n": [4]},
        best_labels={"m": "best (map=0.973)"},
    )
    execute(plan, dry_run=False)
    assert names(tmp_path) == [
        "m_epoch2.pth",
        "m_epoch6.pth",
        "m_epoch7.pth",
        "n_epoch4.pth",
        "n_epoch6.pth",
        "n_epoch7.pth",
    ]
    assert "  kept          m_epoch2.pth: best (map=0.973)" in render_text(execute(plan, dry_run=True))


def test_two_files_for_one_epoch_are_both_left_alone(tmp_path):
    for name in ("m_epoch1.pth", "m_epoch0001.pth", "m_epoch2.pth", "m_epoch3.pth"):
        write(tmp_path, name)
    plan = plan_local(tmp_path, keep=1)
    execute(plan, dry_run=False)
    assert names(tmp_path) == ["m_epoch0001.pth", "m_epoch1.pth", "m_epoch3.pth"]
    assert {s.name for s in plan.skipped} == {"m_epoch1.pth", "m_epoch0001.pth"}
    assert all("several files" in s.reason for s in plan.skipped)


def test_one_failed_deletion_does_not_stop_the_others(tmp_path, monkeypatch):
    for e in range(1, 6):
        write(tmp_path, f"m_epoch{e}.pth", size=10)
    bad = str(tmp_path / "m_epoch2.pth")
    real_unlink = os.unlink

    def flaky_unlink(path, *args, **kwargs):
        if os.fspath(path) == bad:
            raise PermissionError(13, "Permission denied", bad)
        return real_unlink(path, *args, **kwargs)

    # root ignores file permissions, so the failure is injected instead
    monkeypatch.setattr(os, "unlink", flaky_unlink)
    report = execute(plan_local(tmp_path, keep=1), dry_run=False)
    assert names(tmp_path) == ["m_epoch2.pth", "m_epoch5.pth"]
    assert not report.ok
    assert [o.decision.record.name for o in report.failed] == ["m_epoch2.pth"]
    assert "Permission denied" in report.failed[0].error
    assert report.bytes_freed == 30
    text = render_text(report)
    assert "FAILED" in text and "Permission denied" in text
    assert text.splitlines()[-1] == "Deleted 3 files, freed 30 B; 1 deletion failed"
    assert report.to_json()["summary"] == {"deleted": 3, "failed": 1, "bytes": 30}


def test_injected_deleter_and_already_gone(tmp_path):
    for e in range(1, 5):
        write(tmp_path, f"m_epoch{e}.pth", size=10)
    plan = plan_local(tmp_path, keep=1)
    (tmp_path / "m_epoch1.pth").unlink()  # gone between plan and execute
    calls = []

    def delete(name):
        calls.append(name)
        if name == "m_epoch2.pth":
            raise RuntimeError("store\nunavailable")
        local_deleter(tmp_path)(name)

    report = execute(plan, dry_run=False, delete=delete)
    assert calls == ["m_epoch1.pth", "m_epoch2.pth", "m_epoch3.pth"]
    assert [o.status for o in report.outcomes] == ["already gone", "failed", "deleted"]
    assert report.failed[0].error == "RuntimeError: store unavailable"  # one line
    assert report.bytes_freed == 10  # already gone frees nothing now
    assert len(report.deleted) == 2


def test_local_deleter_refuses_what_changed_since_the_plan(tmp_path):
    write(tmp_path, "m_epoch1.pth")
    write(tmp_path, "m_epoch2.pth")
    plan = plan_local(tmp_path, keep=1)
    # replaced by a link to something precious after planning
    precious = write(tmp_path, "precious.bin")
    (tmp_path / "m_epoch1.pth").unlink()
    os.symlink(precious, tmp_path / "m_epoch1.pth")
    report = execute(plan, dry_run=False)
    assert report.outcomes[0].status == "failed"
    assert "no longer a regular file" in report.outcomes[0].error
    assert (tmp_path / "m_epoch1.pth").is_symlink() and precious.exists()


@pytest.mark.parametrize("name", ["../m_epoch1.pth", "m.pth", "sub/m_epoch1.pth"])
def test_local_deleter_refuses_names_that_are_not_checkpoints(tmp_path, name):
    with pytest.raises(CleanupError, match="not a checkpoint name"):
        local_deleter(tmp_path)(name)


def test_to_json_is_serialisable(tmp_path):
    for e in (1, 2, 3):
        write(tmp_path, f"my model_epoch{e}.pth", size=e)
    write(tmp_path, "my model.pth")
    data = execute(plan_local(tmp_path, keep=1), dry_run=False).to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["dry_run"] is False and data["keep"] == 1 and data["kind"] == "local"
    (model,) = data["models"]
    assert model["model"] == "my model" and model["found"] == 3
    assert [k["epoch"] for k in model["kept"]] == [3]
    assert [(d["epoch"], d["size"], d["status"]) for d in model["deleted"]] == [
        (1, 1, "deleted"),
        (2, 2, "deleted"),
    ]
    assert data["skipped"] == [{"name": "my model.pth", "reason": "final model: never deleted"}]


def test_render_text_lists_each_model(tmp_path):
    for e in range(1, 4):
        write(tmp_path, f"a_epoch{e}.pth", size=2048)
    write(tmp_path, "b_epoch1.pth", size=1)
    text = render_text(execute(plan_local(tmp_path, keep=1), dry_run=False))
    assert text.splitlines() == [
        f"{tmp_path}: keeping the newest 1 checkpoints per model",
        "a: 3 checkpoints found, keeping epochs 3",
        "  kept          a_epoch3.pth: newest 1",
        "  deleted       a_epoch1.pth (2.0 KB): older than the newest 1",
        "  deleted       a_epoch2.pth (2.0 KB): older than the newest 1",
        "b: 1 checkpoint found, keeping epochs 1",
        "  kept          b_epoch1.pth: newest 1",
        "Deleted 2 files, freed 4.0 KB",
    ]


def test_empty_folder(tmp_path):
    report = execute(plan_local(tmp_path, keep=3), dry_run=False)
    assert report.ok and report.outcomes == () and report.plan.groups == ()
    assert render_text(report).splitlines()[-1] == "Deleted 0 files, freed 0 B"


def test_nonexistent_directory(tmp_path):
    with pytest.raises(CleanupError, match=f"no such directory: {tmp_path / 'nope'}"):
        plan_local(tmp_path / "nope", keep=1)


def test_file_given_as_directory(tmp_path):
    path = write(tmp_path, "m_epoch1.pth")
    with pytest.raises(CleanupError, match=f"not a directory: {path}"):
        plan_local(path, keep=1)


def test_unreadable_directory(tmp_path, monkeypatch):
    # root can read any folder, so the refusal is injected
    def refuse(path):
        raise PermissionError(13, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(CleanupError, match="cannot read directory .*Permission denied"):
        plan_local(tmp_path, keep=1)


@pytest.mark.parametrize("keep", [0, -2])
def test_bad_keep_before_touching_the_disk(tmp_path, keep):
    with pytest.raises(ValueError, match=f"got {keep}"):
        plan_local(tmp_path / "does not matter", keep=keep)


def test_plan_groups_serves_other_stores():
    # the tracking-store mode: records from the run, its own deleter
    plan = plan_groups(
        "mlflow",
        "runs:/abc123/checkpoints",
        {"m": [CheckpointRecord(e, f"m_epoch{e:04d}.pth", 10, e != 4) for e in range(1, 5)]},
        keep=1,
        best={"m": 1},
    )
    assert isinstance(plan, Plan)
    assert [d.record.epoch for _, d in plan.deletions] == [2]
    gone = []
    report = execute(plan, dry_run=False, delete=gone.append)
    assert gone == ["m_epoch0002.pth"] and report.bytes_freed == 10
    with pytest.raises(ValueError, match="delete function"):
        execute(plan, dry_run=False)
    assert execute(plan, dry_run=True).outcomes[0].status == "would delete"
