"""Cache entries round-trip; damaged entries read as absent (never deleted by a reader); transient
I/O errors propagate; temp files of killed jobs are cleaned up."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest

from rvc_lora.data.cache import read_entry, settings_hash, write_entry


def test_round_trip_and_checksum(tmp_path) -> None:
    arrays = {"wav": np.arange(10, dtype=np.float32), "pitch": np.array([1, 2], np.int16)}
    path = write_entry(tmp_path / "a.npz", arrays)
    back = read_entry(path)
    assert set(back) == {"wav", "pitch"}
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temp files left


def test_corrupted_entry_is_rebuilt_not_used(tmp_path) -> None:
    path = write_entry(tmp_path / "a.npz", {"x": np.ones(1000, np.float32)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the array data
    path.write_bytes(bytes(data))
    assert read_entry(path) is None
    assert path.exists()  # a reader never deletes: the extraction path rewrites it


def test_truncated_and_foreign_entries_read_as_absent(tmp_path) -> None:
    path = write_entry(tmp_path / "a.npz", {"x": np.ones(1000, np.float32)})
    path.write_bytes(path.read_bytes()[:100])
    assert read_entry(path) is None
    np.savez(tmp_path / "b.npz", x=np.ones(3))  # no checksum: not written by us
    assert read_entry(tmp_path / "b.npz") is None
    assert read_entry(tmp_path / "missing.npz") is None


def test_settings_hash_changes_with_any_setting() -> None:
    base = {"sr": 40000, "f0_method": "rmvpe"}
    assert settings_hash(base) == settings_hash(dict(reversed(list(base.items()))))
    assert settings_hash(base) != settings_hash({**base, "f0_method": "harvest"})


def test_transient_os_error_propagates_and_keeps_the_entry(tmp_path, monkeypatch) -> None:
    import rvc_lora.data.cache as cache

    path = write_entry(tmp_path / "a.npz", {"x": np.ones(10, np.float32)})

    def too_many_files(*_a, **_k):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(cache.np, "load", too_many_files)
    with pytest.raises(OSError) as info:
        read_entry(path)
    assert info.value.errno == errno.EMFILE
    monkeypatch.undo()
    assert path.is_file() and np.array_equal(read_entry(path)["x"], np.ones(10, np.float32))


def test_stale_temp_files_are_removed_when_the_cache_is_opened(tmp_path) -> None:
    from rvc_lora.data.cache import STALE_TMP_SECONDS, remove_stale_temp_files

    (tmp_path / "features").mkdir()
    old = tmp_path / "features" / ".a.npz.x1.tmp"
    fresh = tmp_path / "features" / ".b.npz.x2.tmp"
    keep = write_entry(tmp_path / "features" / "c.npz", {"x": np.ones(3, np.float32)})
    for p in (old, fresh):
        p.write_bytes(b"half an entry")
    past = time.time() - STALE_TMP_SECONDS - 5
    os.utime(old, (past, past))
    assert remove_stale_temp_files(tmp_path) == 1
    assert not old.exists() and fresh.exists() and keep.exists()


def _hold_lock(path, held, release) -> None:
    from rvc_lora.data.cache import entry_lock

    with entry_lock(path):
        held.set()
        release.wait(20)


def test_entry_lock_is_seen_from_another_process(tmp_path) -> None:
    import multiprocessing as mp

    from rvc_lora.data.cache import entry_busy, entry_lock

    path = tmp_path / "features" / "a.npz"
    assert not entry_busy(path)  # no lock file yet
    ctx = mp.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(path, held, release))
    child.start()
    try:
        assert held.wait(20)
        assert entry_busy(path)
    finally:
        release.set()
        child.join(20)
    assert child.exitcode == 0 and not entry_busy(path)
    with entry_lock(path):  # free again, and our own holding shows as busy to others
        assert entry_busy(path)
    assert Path(f"{path}.lock").is_file()  # kept: removing it would split later lockers
