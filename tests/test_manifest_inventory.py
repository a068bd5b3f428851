"""The run's manifest, the merged inventory and folder verification, on real files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.checkpoints import manifest as manifest_mod
from tracker.checkpoints.folder import locate, verify
from tracker.checkpoints.inventory import Inventory, Item, Skipped, build, scan_local
from tracker.checkpoints.manifest import (
    MANIFEST_NAME,
    Binding,
    Entry,
    Manifest,
    ManifestError,
    has_manifest,
)
from tracker.policy.retention import LatestN, decide

REPO = Path(__file__).resolve().parents[1]
RUN_A, RUN_B = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


def binding(run_id=RUN_A, uri="http://127.0.0.1:5000", model="m"):
    return Binding(run_id, uri, model, "map", "max")


def entry(epoch, state="stored", size=100, name=None, sha="ab" * 32, value=None):
    return Entry(epoch, name or f"m_epoch{epoch:04d}.pth", size, sha, state, value)


def reasons(inv: Inventory) -> dict[str, str]:
    return {s.name: s.reason for s in inv.not_ours}


# --- Manifest: create, open, binding --------------------------------------------------------------


def test_create_then_open_with_the_right_run(tmp_path):
    made = Manifest.create(tmp_path, binding(model="mammals"))
    assert made.run_id == RUN_A and made.path == tmp_path / MANIFEST_NAME and made.folder == tmp_path
    opened = Manifest.open(tmp_path, run_id=RUN_A)
    assert opened.binding == Binding(RUN_A, "http://127.0.0.1:5000", "mammals", "map", "max")
    assert Manifest.open(tmp_path, run_id=None).run_id == RUN_A
    assert has_manifest(tmp_path)
    assert opened.entries() == {}


def test_open_with_another_run_names_both(tmp_path):
    Manifest.create(tmp_path, binding(RUN_A))
    with pytest.raises(ManifestError) as err:
        Manifest.open(tmp_path, run_id=RUN_B)
    msg = str(err.value)
    assert RUN_A in msg and RUN_B in msg and "\n" not in msg
    # create on a folder already bound to another run opens it for that run: refused the same way
    with pytest.raises(ManifestError, match=RUN_B):
        Manifest.create(tmp_path, binding(RUN_B))
    assert Manifest.open(tmp_path, run_id=RUN_A).run_id == RUN_A  # still the first run's


def test_create_again_for_the_same_run_keeps_its_rows(tmp_path):
    Manifest.create(tmp_path, binding()).record(entry(1))
    again = Manifest.create(tmp_path, binding())
    assert list(again.entries()) == [1]


def test_open_without_manifest(tmp_path):
    with pytest.raises(ManifestError, match=f"no {MANIFEST_NAME}.*run {RUN_A}'s"):
        Manifest.open(tmp_path, run_id=RUN_A)
    assert not has_manifest(tmp_path)


def test_create_is_atomic_and_leaves_one_file(tmp_path):
    m = Manifest.create(tmp_path, binding())
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_NAME]
    m.record(entry(1))
    m.set_state(1, "deleted")
    m.entries()
    m.close()  # a live manifest keeps SQLite's -wal/-shm beside it; closed, it is one file again
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_NAME]  # no journal, no *.tmp left behind
    assert not list(tmp_path.glob("*.tmp"))


def test_create_failing_at_the_rename_leaves_nothing(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest_mod.os, "link", boom)
    with pytest.raises(OSError, match="No space left"):
        Manifest.create(tmp_path, binding())
    assert os.listdir(tmp_path) == []  # neither a manifest nor its temporary


def test_damaged_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).write_bytes(b"\x00garbage, not sqlite\xff" * 300)
    with pytest.raises(ManifestError, match="damaged manifest") as err:
        Manifest.open(tmp_path, run_id=RUN_A)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    found = verify(tmp_path, RUN_A)
    assert found.folder is None and "damaged manifest" in found.problem


def _hand_made_manifest(path: Path, binding_rows: dict[str, str]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE binding (key VARCHAR PRIMARY KEY, value VARCHAR)")
        conn.execute("CREATE TABLE checkpoints (epoch INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, "
                     "size INTEGER NOT NULL, sha256 VARCHAR, state VARCHAR NOT NULL, value FLOAT, "
                     "updated FLOAT NOT NULL)")
        conn.executemany("INSERT INTO binding VALUES (?, ?)", list(binding_rows.items()))
    conn.close()


@pytest.mark.parametrize(
    ("rows", "missing"),
    [
        ({}, "no format, run_id, model_name"),
        ({"format": "1", "model_name": "m"}, "no run_id"),
        ({"format": "1", "run_id": "", "model_name": "m"}, "no run_id"),
    ],
)
def test_half_written_manifest(tmp_path, rows, missing):
    _hand_made_manifest(tmp_path / MANIFEST_NAME, rows)
    with pytest.raises(ManifestError, match="half-written manifest") as err:
        Manifest.open(tmp_path, run_id=RUN_A)
    assert missing in str(err.value)


def test_unknown_format_is_refused(tmp_path):
    _hand_made_manifest(tmp_path / MANIFEST_NAME, {"format": "99", "run_id": RUN_A, "model_name": "m"})
    with pytest.raises(ManifestError, match="manifest format '99'"):
        Manifest.open(tmp_path, run_id=RUN_A)


def test_symlinked_manifest_is_refused(tmp_path):
    real, folder = tmp_path / "real", tmp_path / "folder"
    real.mkdir()
    folder.mkdir()
    Manifest.create(real, binding())
    (folder / MANIFEST_NAME).symlink_to(real / MANIFEST_NAME)
    assert not has_manifest(folder)
    with pytest.raises(ManifestError, match="not a regular file"):
        Manifest.open(folder, run_id=RUN_A)
    with pytest.raises(ManifestError, match="not a regular file"):
        Manifest.create(folder, binding())
    found = verify(folder, RUN_A)
    assert found.folder is None and "not a regular file" in found.problem


def test_dangling_manifest_symlink_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.sqlite"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / MANIFEST_NAME).symlink_to(target)
    with pytest.raises(ManifestError, match="not a regular file"):
        Manifest.create(folder, binding())
    assert not target.exists()
    assert sorted(os.listdir(folder)) == [MANIFEST_NAME]  # no temporary left behind


def test_credentials_in_the_tracking_uri_are_redacted(tmp_path):
    uri = "https://alice:s3cr3t-pw@mlflow.example.com:5000/"
    made = Manifest.create(tmp_path, binding(uri=uri))
    for b in (made.binding, Manifest.open(tmp_path, run_id=RUN_A).binding):
        assert "alice:s3cr3t-pw@" not in b.tracking_uri and "s3cr3t-pw" not in b.tracking_uri
        assert "mlflow.example.com:5000" in b.tracking_uri
    assert b"s3cr3t-pw" not in (tmp_path / MANIFEST_NAME).read_bytes()


# --- Manifest rows ------------------------------------------------------------------------------------


def test_record_replaces_the_row_of_the_same_epoch(tmp_path):
    m = Manifest.create(tmp_path, binding())
    m.record(entry(3, "written", size=10, sha="aa"))
    m.record(entry(4, "written", size=40))
    m.record(entry(3, "stored", size=20, sha="bb", value=0.5))
    assert m.entries() == {3: Entry(3, "m_epoch0003.pth", 20, "bb", "stored", 0.5),
                           4: Entry(4, "m_epoch0004.pth", 40, "ab" * 32, "written", None)}
    # a name that is not this model's checkpoint of that epoch is never written
    with pytest.raises(ValueError, match="not model 'm''s checkpoint of epoch 5"):
        m.record(entry(5, "written", size=50, name="m_epoch0004.pth"))
    assert sorted(m.entries()) == [3, 4]
    assert Manifest.open(tmp_path, run_id=RUN_A).entries()[4].size == 40


def test_set_state_and_bad_states(tmp_path):
    m = Manifest.create(tmp_path, binding())
    m.record(entry(1, "written"))
    m.set_state(1, "stored")
    assert m.entries()[1].state == "stored"
    m.set_state(1, "deleted")
    assert m.entries()[1].state == "deleted"
    m.forget(1)
    assert m.entries() == {}
    with pytest.raises(ValueError, match="state must be one of"):
        m.record(entry(2, "uploading"))
    with pytest.raises(ValueError, match="got 'gone'"):
        m.set_state(1, "gone")
    assert m.entries() == {}


def test_an_unknown_state_on_disk_reads_as_written(tmp_path):
    m = Manifest.create(tmp_path, binding())
    m.record(entry(1, "stored"))
    with sqlite3.connect(tmp_path / MANIFEST_NAME) as conn:
        conn.execute("UPDATE checkpoints SET state = 'mystery'")
    conn.close()
    assert m.entries()[1].state == "written"


_WRITER = r"""
import sys, time
from pathlib import Path
from tracker.checkpoints.manifest import Entry, Manifest
folder, run_id, first, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    Path(sys.argv[5])
m = Manifest.open(folder, run_id=run_id)
print("ready", flush=True)
deadline = time.time() + 60
while not go.exists():
    if time.time() > deadline:
        sys.exit("never told to go")
    time.sleep(0.001)
for e in range(first, first + count):
    m.record(Entry(e, f"m_epoch{e:04d}.pth", e + 1, None, "written", None))
    m.set_state(e, "stored")
    m.entries()
print("done", flush=True)
"""


def test_two_processes_write_rows_at_the_same_time(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    Manifest.create(folder, binding())
    go, count = tmp_path / "go", 60
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), RUN_A, str(first), str(count),
                               str(go)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for first in (0, 1000)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err and out.strip() == "done"
    rows = Manifest.open(folder, run_id=RUN_A).entries()
    expected = set(range(count)) | set(range(1000, 1000 + count))
    assert set(rows) == expected
    assert all(r.state == "stored" and r.size == r.epoch + 1 for r in rows.values())


# --- inventory.build with a manifest ------------------------------------------------------------------


def test_local_file_with_the_manifest_name_but_another_size_is_not_ours():
    name = "m_epoch0001.pth"
    inv = build("m", manifest={1: entry(1, size=100)}, local={name: 99}, tracked={name: 100})
    (item,) = inv.items
    assert (item.epoch, item.local, item.stored, item.tracked) == (1, False, True, True)
    assert reasons(inv)[name].startswith("not ours: 99 bytes, the manifest says 100")
    assert inv.bound


def test_local_file_not_in_the_manifest_is_not_ours():
    inv = build("m", manifest={1: entry(1)}, tracked={"m_epoch0001.pth": 100},
                local={"m_epoch0001.pth": 100, "m_epoch0002.pth": 100, "other_epoch0001.pth": 5})
    assert [i.epoch for i in inv.items] == [1]
    assert inv.items[0].local is True
    r = reasons(inv)
    assert set(r) == {"m_epoch0002.pth", "other_epoch0001.pth"}
    assert all(v == "not ours: not in the run's manifest; never deleted" for v in r.values())


def test_written_row_absent_from_the_tracked_listing_is_not_stored():
    name = "m_epoch0005.pth"
    inv = build("m", manifest={5: entry(5, "written")}, local={name: 100}, tracked={})
    (item,) = inv.items
    assert item == Item(5, name, 100, "ab" * 32, None, stored=False, tracked=False, local=True,
                        state="written")
    (d,) = decide(inv.records(), [LatestN(1)])
    assert d.keep and d.reason == "not confirmed stored"


def test_written_row_listed_with_the_right_size_is_stored():
    name = "m_epoch0005.pth"
    inv = build("m", manifest={5: entry(5, "written")}, local={name: 100}, tracked={name: 100})
    (item,) = inv.items
    assert (item.stored, item.tracked, item.local, item.state) == (True, True, True, "written")
    assert inv.records()[0].stored is True


def test_row_listed_with_another_size_is_not_stored():
    name = "m_epoch0005.pth"
    inv = build("m", manifest={5: entry(5, "stored")}, local={name: 100}, tracked={name: 50})
    (item,) = inv.items
    assert (item.stored, item.tracked, item.local) == (False, True, True)
    assert reasons(inv)[name].startswith("the store lists 50 bytes, the manifest 100")


def test_deleted_row_with_a_tracked_copy_is_an_interrupted_deletion():
    manifest = {1: entry(1, "deleted"), 2: entry(2, "stored")}
    tracked = {"m_epoch0001.pth": 100, "m_epoch0002.pth": 100}
    inv = build("m", manifest=manifest, local={}, tracked=tracked)
    by = inv.by_epoch()
    assert by[1].interrupted is True and by[1].tracked is True and by[1].state == "deleted"
    assert by[2].interrupted is False
    assert [i.epoch for i in inv.interrupted] == [1]
    assert [r.epoch for r in inv.records()] == [2]
    assert inv.vanished == ()


def test_rows_gone_from_both_sides_vanish():
    manifest = {1: entry(1, "deleted"), 2: entry(2, "written"), 3: entry(3, "stored"), 4: entry(4)}
    inv = build("m", manifest=manifest, local={}, tracked={"m_epoch0004.pth": 100})
    assert inv.vanished == (1, 2, 3)
    assert [i.epoch for i in inv.items] == [4]


def test_without_a_store_a_stored_row_stands_without_copies():
    # tracked=None: no listing to check against, the manifest's state is all there is
    inv = build("m", manifest={1: entry(1, "stored"), 2: entry(2, "written")}, local={}, tracked=None)
    assert [(i.epoch, i.stored, i.local) for i in inv.items] == [(1, True, False)]
    assert inv.vanished == (2,)


def test_tracked_only_name_of_the_same_model_becomes_a_stored_item():
    tracked = {"m_epoch0001.pth": 100, "m_epoch0007.pth": 70, "other_epoch0008.pth": 5, "m.pth": 9}
    inv = build("m", manifest={1: entry(1)}, local={}, tracked=tracked, values={7: 0.4})
    assert [i.epoch for i in inv.items] == [1, 7]
    assert inv.by_epoch()[7] == Item(7, "m_epoch0007.pth", 70, None, 0.4, stored=True, tracked=True,
                                     local=False, state="stored")


def test_second_tracked_name_for_a_manifest_epoch_is_kept_not_an_item():
    tracked = {"m_epoch0001.pth": 100, "m_epoch1.pth": 100}
    inv = build("m", manifest={1: entry(1)}, local={}, tracked=tracked)
    assert [i.name for i in inv.items] == ["m_epoch0001.pth"]
    assert reasons(inv)["m_epoch1.pth"] == "a second tracked name for epoch 1: kept"


def test_two_tracked_only_names_for_one_epoch_give_one_item_at_most():
    # The inventory promises one item per epoch (retention refuses two records for one epoch).
    tracked = {"m_epoch0005.pth": 10, "m_epoch5.pth": 10}
    inv = build("m", manifest={}, local={}, tracked=tracked)
    epochs = [i.epoch for i in inv.items]
    assert len(epochs) == len(set(epochs)), inv.items
    decide(inv.records(), [LatestN(1)])  # must not raise "two checkpoints for epoch 5"


def test_manifest_values_and_store_values():
    inv = build("m", manifest={1: entry(1, value=0.3), 2: entry(2, value=0.1)}, local={},
                tracked={"m_epoch0001.pth": 100, "m_epoch0002.pth": 100}, values={2: 0.9})
    assert [i.value for i in inv.items] == [0.3, 0.9]  # the store's history wins where it has one


# --- inventory.build without a manifest ---------------------------------------------------------------


def test_flat_folder_one_item_per_epoch_and_two_names_skipped():
    local = {"m_epoch0001.pth": 10, "m_epoch0002.pth": 20, "m_epoch3.pth": 30, "m_epoch0003.pth": 31,
             "other_epoch0001.pth": 5}
    inv = build("m", manifest=None, local=local, tracked=None, values={2: 0.5})
    assert inv.items == (
        Item(1, "m_epoch0001.pth", 10, None, None, True, False, True, "legacy"),
        Item(2, "m_epoch0002.pth", 20, None, 0.5, True, False, True, "legacy"),
    )
    r = reasons(inv)
    assert set(r) == {"m_epoch3.pth", "m_epoch0003.pth"}
    assert all(v.startswith("one of 2 files for epoch 3") for v in r.values())
    assert not inv.bound and inv.vanished == ()


def test_legacy_own_folder_counts_a_local_copy_only_with_the_tracked_size():
    tracked = {"m_epoch0001.pth": 10, "m_epoch0002.pth": 20}
    local = {"m_epoch0001.pth": 10, "m_epoch0002.pth": 21, "m_epoch0003.pth": 30}
    inv = build("m", manifest=None, local=local, tracked=tracked, legacy_local=True)
    by = inv.by_epoch()
    assert (by[1].local, by[1].stored, by[1].tracked) == (True, True, True)
    assert (by[2].local, by[2].stored, by[2].tracked, by[2].size) == (False, True, True, 20)
    assert (by[3].local, by[3].stored, by[3].tracked) == (True, False, False)  # upload never confirmed
    assert reasons(inv) == {"m_epoch0002.pth": "not ours: its size differs from the tracked copy's; "
                                               "never deleted"}


def test_legacy_foreign_folder_counts_no_local_copy():
    tracked = {"m_epoch0001.pth": 10}
    local = {"m_epoch0001.pth": 10, "m_epoch0003.pth": 30}
    inv = build("m", manifest=None, local=local, tracked=tracked, legacy_local=False)
    assert [(i.epoch, i.local, i.stored) for i in inv.items] == [(1, False, True)]
    r = reasons(inv)
    assert set(r) == {"m_epoch0001.pth", "m_epoch0003.pth"}
    assert all("not this run's own" in v for v in r.values())


def test_legacy_local_copy_skipped_as_ambiguous_is_not_also_an_items_local_copy():
    # Two local names for epoch 3 are "never deleted; which is real is for a person to say";
    # the same file must then not be the item's local copy, which the deleter would delete.
    local = {"m_epoch3.pth": 10, "m_epoch0003.pth": 10}
    inv = build("m", manifest=None, local=local, tracked={"m_epoch0003.pth": 10}, legacy_local=True)
    never = {s.name for s in inv.not_ours if "never deleted" in s.reason}
    assert never == {"m_epoch3.pth", "m_epoch0003.pth"}
    assert [i.name for i in inv.items if i.local and i.name in never] == []


# --- scan_local ---------------------------------------------------------------------------------------


def test_scan_local_reports_look_alikes_links_and_directories(tmp_path):
    (tmp_path / "m_epoch0001.pth").write_bytes(b"x" * 10)
    (tmp_path / "m.pth.4").write_bytes(b"x" * 4)
    for name in ("m.pth", "a_epoch.pth", "b_epoch-3.pth", "weird_epoch1e3.pth", "m.pth.4.tmp",
                 "notes.txt", MANIFEST_NAME):
        (tmp_path / name).write_bytes(b"y")
    (tmp_path / "m_epoch0002.pth").symlink_to(tmp_path / "m_epoch0001.pth")
    (tmp_path / "m_epoch0003.pth").mkdir()
    files, skipped = scan_local(tmp_path)
    assert files == {"m_epoch0001.pth": 10, "m.pth.4": 4}
    r = {s.name: s.reason for s in skipped}
    assert set(r) == {"m.pth", "a_epoch.pth", "b_epoch-3.pth", "weird_epoch1e3.pth", "m.pth.4.tmp",
                      "m_epoch0002.pth", "m_epoch0003.pth"}
    for name in ("a_epoch.pth", "b_epoch-3.pth", "weird_epoch1e3.pth", "m.pth.4.tmp"):
        assert r[name].startswith("not a checkpoint name"), (name, r[name])
        assert "final model" not in r[name]
    assert r["m.pth"] == "final model: never deleted"
    assert r["m_epoch0002.pth"].startswith("symlink")
    assert r["m_epoch0003.pth"].startswith("directory named like a checkpoint")
    assert all(isinstance(s, Skipped) for s in skipped)


def test_scan_local_final_model_only_when_its_model_has_checkpoints(tmp_path):
    (tmp_path / "m.pth").write_bytes(b"y")
    (tmp_path / "x_epoch0001.pth").write_bytes(b"zz")
    files, skipped = scan_local(tmp_path)
    assert files == {"x_epoch0001.pth": 2}
    assert skipped == []  # m.pth: not a final model of anything here, nor a look-alike
    (tmp_path / "x.pth").write_bytes(b"y")
    _, skipped = scan_local(tmp_path)
    assert skipped == [Skipped("x.pth", "final model: never deleted")]


def test_scan_local_look_alike_of_a_model_with_checkpoints_elsewhere(tmp_path):
    # "a_epoch.pth" next to "a_epoch0001.pth": model "a" has checkpoints, "a_epoch" has none
    (tmp_path / "a_epoch0001.pth").write_bytes(b"x")
    (tmp_path / "a_epoch.pth").write_bytes(b"y")
    (tmp_path / "a.pth").write_bytes(b"y")
    _, skipped = scan_local(tmp_path)
    r = {s.name: s.reason for s in skipped}
    assert r["a_epoch.pth"].startswith("not a checkpoint name")
    assert r["a.pth"] == "final model: never deleted"


def test_scan_local_missing_folder_raises(tmp_path):
    with pytest.raises(OSError):
        scan_local(tmp_path / "nope")


# --- folder.verify / locate ---------------------------------------------------------------------------


def test_verify_folder_of_another_run(tmp_path):
    folder = tmp_path / RUN_B  # even named after the run asked for: the manifest decides
    folder.mkdir()
    Manifest.create(folder, binding(RUN_A))
    found = verify(folder, RUN_B)
    assert found.folder is None and found.manifest is None
    assert RUN_A in found.problem and RUN_B in found.problem


def test_verify_folder_of_the_run(tmp_path):
    Manifest.create(tmp_path, binding(RUN_A))
    found = verify(tmp_path, RUN_A)
    assert found.folder == tmp_path and found.manifest.run_id == RUN_A
    assert found.problem is None and found.legacy is False


def test_verify_no_manifest_not_named_after_the_run(tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    found = verify(folder, RUN_A)
    assert found.folder is None
    assert f"not named after run {RUN_A}" in found.problem and str(folder) in found.problem


def test_verify_no_manifest_named_after_the_run_is_legacy(tmp_path):
    folder = tmp_path / RUN_A
    folder.mkdir()
    found = verify(folder, RUN_A)
    assert (found.folder, found.manifest, found.legacy, found.problem) == (folder, None, True, None)


def test_verify_missing_folder_and_linked_folder(tmp_path):
    assert verify(tmp_path / "gone", RUN_A).folder is None
    assert verify(tmp_path / "gone", RUN_A).problem is None
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / RUN_A).symlink_to(real)
    found = verify(tmp_path / RUN_A, RUN_A)
    assert found.folder is None and "not a plain directory" in found.problem


def test_locate_hint_to_a_missing_folder_falls_back_with_a_note(tmp_path):
    default = tmp_path / RUN_A
    default.mkdir()
    Manifest.create(default, binding(RUN_A))
    hint = str(tmp_path / "other-machine" / "ckpt")
    found = locate(RUN_A, hint=hint, root=tmp_path)
    assert found.folder == default and found.manifest.run_id == RUN_A and found.problem is None
    assert hint in found.note and str(default) in found.note


def test_locate_hint_and_default_both_missing(tmp_path):
    found = locate(RUN_A, hint=str(tmp_path / "gone"), root=tmp_path)
    assert found.folder is None and found.problem is None and str(tmp_path / "gone") in found.note


def test_locate_a_hint_that_fails_verification_is_a_problem_even_with_a_default(tmp_path):
    (tmp_path / RUN_A).mkdir()
    hinted = tmp_path / "edited-tag"
    hinted.mkdir()
    Manifest.create(hinted, binding(RUN_B))
    found = locate(RUN_A, hint=str(hinted), root=tmp_path)
    assert found.folder is None and RUN_B in found.problem


def test_locate_without_a_hint_uses_the_default(tmp_path):
    (tmp_path / RUN_A).mkdir()
    found = locate(RUN_A, hint=None, root=tmp_path)
    assert found.folder == tmp_path / RUN_A and found.legacy
    assert locate(RUN_A, hint=None, root=None).folder is None
