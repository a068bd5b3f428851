"""Checkpoints: atomic writes, and loads that refuse anything but tensors and plain types."""

import os

import pytest
import torch

from tracker.checkpoints.files import CheckpointError, load, remove_temporaries, save_atomic


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil_epoch0001.pth"
    torch.save({"embeddings": torch.zeros(2, 2), "names": ["a", "b"], "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (b"hello, not a zip", "not a readable checkpoint"),
])
def test_garbage_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "m_epoch0001.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "m_epoch0001.pth"
    save_atomic({"embeddings": torch.rand(100, 5), "names": [str(i) for i in range(100)]}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load(path)


def test_not_a_hype_checkpoint(tmp_path):
    path = tmp_path / "m_epoch0001.pth"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a hype checkpoint"):
        load(path)


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m_epoch0001.pth"
    save_atomic({"embeddings": torch.ones(2), "names": ["a"]}, path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_atomic({"embeddings": torch.zeros(2), "names": ["a"]}, path)
    assert torch.equal(load(path)["embeddings"], torch.ones(2))  # old content intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_epoch0001.pth"]


def test_remove_temporaries_only_removes_partial_saves(tmp_path):
    (tmp_path / "m_epoch0002.pth.abc123xy.tmp").write_bytes(b"partial")
    (tmp_path / "m.pth.q1w2e3r4.tmp").write_bytes(b"partial final model")
    for other in ("notes.tmp", "results.pth.v1.tmp", "other_epoch0002.pth.abc123xy.tmp"):
        (tmp_path / other).write_text("not ours")
    (tmp_path / "m_epoch0001.pth").write_bytes(b"x")
    removed = remove_temporaries(tmp_path, "m")
    assert [p.name for p in removed] == ["m.pth.q1w2e3r4.tmp", "m_epoch0002.pth.abc123xy.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m_epoch0001.pth", "notes.tmp", "other_epoch0002.pth.abc123xy.tmp", "results.pth.v1.tmp"]


def test_what_we_save_loads_with_weights_only(tmp_path):
    path = tmp_path / "m_epoch0001.pth"
    save_atomic({"embeddings": torch.rand(3, 2), "names": ["a", "b", "c"], "config": {"dim": 2},
                 "rng": {"torch": torch.get_rng_state()}}, path)
    assert load(path)["config"] == {"dim": 2}


def test_a_file_left_as_written_is_proven_ours_unread_any_change_is_hashed(tmp_path, monkeypatch):
    from tracker.checkpoints import files

    path = tmp_path / "m_epoch0001.pth"
    size = save_atomic({"x": torch.arange(1000)}, path)
    sha, written = files.sha256_of(path), files.Written.at(path)
    real_sha = files.sha256_of
    reads = []
    monkeypatch.setattr(files, "sha256_of", lambda p: reads.append(p) or real_sha(p))

    assert files.not_the_recorded(path, size, sha, written=written) is None
    assert reads == []  # unchanged since it was written: no read
    assert files.not_the_recorded(path, size, sha) is None and len(reads) == 1  # no memo: hashed

    # Same size, same bytes count and mtime put back: only ctime tells, and it sends it to the hash.
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    why = files.not_the_recorded(path, size, sha, written=written)
    assert why == "its sha256 differs from the manifest's"
    assert len(reads) == 2

    # Another file renamed onto the name (same bytes, even): a new inode, hashed again.
    twin = tmp_path / "twin"
    twin.write_bytes(bytes(data))
    os.replace(twin, path)
    assert files.not_the_recorded(path, size, sha, written=written) is not None and len(reads) == 3


def test_saves_skip_the_zip_crc_that_torch_load_never_checks_and_leave_torch_as_it_was(tmp_path):
    import zipfile

    path = tmp_path / "m_epoch0001.pth"
    save_atomic({"embeddings": torch.ones(300, 4, dtype=torch.float64), "names": ["a"]}, path)
    assert torch.serialization.get_crc32_options() is True  # other torch.save callers keep theirs
    with zipfile.ZipFile(path) as z:
        data = [i for i in z.infolist() if i.filename.split("/")[-1].isdigit()]
        assert data and all(i.CRC == 0 for i in data)
    assert torch.equal(load(path)["embeddings"], torch.ones(300, 4, dtype=torch.float64))


def test_the_sha256_handed_over_before_the_rename_is_the_files(tmp_path):
    """save_atomic hashes the bytes as torch.save writes them (no read-back): the digest the
    manifest records must be the finished file's, a large tensor record included."""
    from tracker.checkpoints import files

    path, seen = tmp_path / "m_epoch0002.pth", []
    obj = {"embeddings": torch.rand(40_000, 10, dtype=torch.float64), "names": ["a"] * 3}
    save_atomic(obj, path, before_replace=lambda tmp, sha: seen.append((tmp.exists(), path.exists(), sha)))
    assert len(seen) == 1
    tmp_existed, final_existed, sha = seen[0]
    assert tmp_existed and not final_existed  # called before the rename, on the durable temp file
    assert sha == files.sha256_of(path)
    assert torch.equal(files.load(path)["embeddings"], obj["embeddings"])
