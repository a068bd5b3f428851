"""Local cleanup of flat folders (the seed's two formats, no manifest), through the CLI, on real
folders under tmp_path. Run folders (with a manifest) are tested in test_lifecycle.py."""

import json
import os

import pytest
from click.testing import CliRunner

from cli import cli


def write(directory, name, size=100):
    path = directory / name
    path.write_bytes(b"x" * size)
    return path


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def clean(directory, *args):
    return CliRunner().invoke(cli, ["cleanup", "--directory", str(directory), *args])


def test_epoch_format_keeps_newest(tmp_path):
    for e in range(1, 6):
        write(tmp_path, f"mammals_epoch{e:04d}.pth", size=1000 * e)
    r = clean(tmp_path, "--keep", "2", "--json")
    assert r.exit_code == 0, r.output
    assert names(tmp_path) == ["mammals_epoch0004.pth", "mammals_epoch0005.pth"]
    report = json.loads(r.output)
    assert report["summary"]["deleted"] == 3
    assert report["summary"]["bytes"] == 1000 + 2000 + 3000


def test_poincare_format_orders_by_epoch_not_text(tmp_path):
    # as text, "m.pth.10" < "m.pth.9"; by epoch 10 is the newest
    for e in (1, 2, 9, 10):
        write(tmp_path, f"m.pth.{e}")
    assert clean(tmp_path, "--keep", "2").exit_code == 0
    assert names(tmp_path) == ["m.pth.10", "m.pth.9"]


def test_ignores_modification_times(tmp_path):
    for e in (1, 2, 3):
        write(tmp_path, f"m_epoch{e}.pth")
    os.utime(tmp_path / "m_epoch1.pth", (2_000_000_000, 2_000_000_000))  # touched last, still oldest
    clean(tmp_path, "--keep", "1")
    assert names(tmp_path) == ["m_epoch3.pth"]


def test_mixed_models_grouped_by_name(tmp_path):
    for e in range(1, 4):
        write(tmp_path, f"a_epoch{e}.pth")
        write(tmp_path, f"b.pth.{e}")
    r = clean(tmp_path, "--keep", "1")
    assert r.exit_code == 0, r.output
    assert names(tmp_path) == ["a_epoch3.pth", "b.pth.3"]


def test_look_alikes_and_the_final_model_are_never_deleted_nor_mislabelled(tmp_path):
    for e in (1, 2, 3):
        write(tmp_path, f"m_epoch{e}.pth")
    alikes = ["a_epoch.pth", "b_epoch-3.pth", "weird_epoch1e3.pth", "m_epoch3.pth.tmp", "notes_epoch3.txt"]
    for n in [*alikes, "m.pth", "other.pth"]:
        write(tmp_path, n)
    r = clean(tmp_path, "--keep", "1")
    assert r.exit_code == 0, r.output
    assert set(names(tmp_path)) == {"m_epoch3.pth", "m.pth", "other.pth", *alikes}
    lines = {ln.split()[2].rstrip(":"): ln for ln in r.output.splitlines() if ln.startswith("  left alone")}
    assert "final model" in lines["m.pth"]
    for n in ("a_epoch.pth", "b_epoch-3.pth", "weird_epoch1e3.pth"):
        assert "not a checkpoint name" in lines[n] and "final model" not in lines[n]


def test_directories_and_symlinks_named_like_checkpoints(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = write(outside, "precious.bin")
    folder = tmp_path / "f"
    folder.mkdir()
    for e in (1, 2, 3):
        write(folder, f"m_epoch{e}.pth")
    (folder / "m_epoch0.pth").mkdir()
    (folder / "m_epoch-1.pth").symlink_to(target)
    os.symlink(target, folder / "m.pth.0")
    r = clean(folder, "--keep", "1")
    assert r.exit_code == 0, r.output
    assert target.exists() and (folder / "m.pth.0").is_symlink() and (folder / "m_epoch0.pth").is_dir()
    assert "symlink" in r.output and "directory named like a checkpoint" in r.output


def test_dry_run_deletes_nothing_and_reports_exact_bytes(tmp_path):
    for e in (1, 2, 3):
        write(tmp_path, f"m_epoch{e}.pth", size=10 * e)
    before = names(tmp_path)
    r = clean(tmp_path, "--keep", "1", "--dry-run", "--json")
    assert names(tmp_path) == before
    report = json.loads(r.output)
    assert report["dry_run"] is True and report["summary"]["bytes"] == 30
    statuses = {c["name"]: c["status"] for t in report["targets"] for c in t["checkpoints"]}
    assert statuses == {"m_epoch1.pth": "would delete", "m_epoch2.pth": "would delete",
                        "m_epoch3.pth": "kept"}


def test_keep_every_keeps_multiples_and_names_the_policy(tmp_path):
    for e in range(1, 11):
        write(tmp_path, f"m_epoch{e}.pth")
    r = clean(tmp_path, "--keep", "2", "--keep-every", "4")
    assert r.exit_code == 0, r.output
    assert names(tmp_path) == sorted(f"m_epoch{e}.pth" for e in (4, 8, 9, 10))
    assert "m_epoch8.pth: every 4 epochs" in r.output


def test_keep_more_than_found_deletes_nothing(tmp_path):
    for e in (1, 2):
        write(tmp_path, f"m_epoch{e}.pth")
    assert clean(tmp_path, "--keep", "5").exit_code == 0
    assert len(names(tmp_path)) == 2


def test_two_files_for_one_epoch_are_both_left_alone(tmp_path):
    for n in ("m_epoch3.pth", "m_epoch0003.pth", "m_epoch1.pth", "m_epoch4.pth", "m_epoch5.pth"):
        write(tmp_path, n)
    r = clean(tmp_path, "--keep", "1")
    assert names(tmp_path) == ["m_epoch0003.pth", "m_epoch3.pth", "m_epoch5.pth"]
    assert "which is real is for a person to say" in r.output


def test_a_failed_deletion_exits_nonzero_and_the_others_happen(tmp_path, monkeypatch):
    for e in (1, 2, 3, 4):
        write(tmp_path, f"m_epoch{e}.pth")
    real_unlink = os.unlink

    def unlink(path, *a, **k):
        if str(path).endswith("m_epoch2.pth"):
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "unlink", unlink)
    r = clean(tmp_path, "--keep", "1")
    assert r.exit_code == 1
    assert names(tmp_path) == ["m_epoch2.pth", "m_epoch4.pth"]
    assert "FAILED" in r.output and "Permission denied" in r.output


def test_nothing_found_says_where_it_looked_and_what_it_expected(tmp_path):
    write(tmp_path, "readme.txt")
    (tmp_path / "checkpoints").mkdir()
    r = clean(tmp_path)
    assert r.exit_code == 0
    assert "no checkpoints found" in r.output and str(tmp_path) in r.output
    assert "<model>_epoch<N>.pth" in r.output and "hype_manifest.sqlite" in r.output


def test_subfolder_without_manifest_is_not_a_run_folder(tmp_path):
    sub = tmp_path / "checkpoints" / "somerun"
    sub.mkdir(parents=True)
    for e in (1, 2, 3):
        write(sub, f"m_epoch{e}.pth")
    r = clean(tmp_path, "--keep", "1")
    assert len(names(sub)) == 3  # never treated as a run folder
    assert str(sub) in r.output and "--directory" in r.output


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
])
def test_bad_directories_are_one_line_errors(tmp_path, make, message):
    r = clean(make(tmp_path))
    assert r.exit_code != 0 and message in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("keep", ["0", "-1"])
def test_bad_keep_is_refused_before_touching_the_disk(tmp_path, keep):
    write(tmp_path, "m_epoch1.pth")
    r = clean(tmp_path, "--keep", keep)
    assert r.exit_code == 2 and "--keep" in r.output
    assert names(tmp_path) == ["m_epoch1.pth"]
