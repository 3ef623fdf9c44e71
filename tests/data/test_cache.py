"""Cache entries round-trip, and damaged entries are detected, removed and reported as absent."""

from __future__ import annotations

import numpy as np

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
    assert not path.exists()


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
