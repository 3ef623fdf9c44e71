"""Atomic writes: complete file or the old one, never half of one, and no temp files left."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.utils.atomic import atomic_path, atomic_torch_save


def test_equal_objects_give_identical_bytes(tmp_path) -> None:
    a = atomic_torch_save({"w": torch.arange(4.0)}, tmp_path / "a.pth")
    b = atomic_torch_save({"w": torch.arange(4.0)}, tmp_path / "b.pth")
    assert a.read_bytes() == b.read_bytes()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
