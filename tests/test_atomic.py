"""Atomic writes: complete file or the old one, never half of one, and no temp files left."""

from __future__ import annotations

import os
import stat
import threading

import pytest
import torch

from rvc_lora.utils import atomic
from rvc_lora.utils.atomic import atomic_path, atomic_torch_save, atomic_write_text


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


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def test_new_file_gets_0666_minus_the_umask(tmp_path, umask_022) -> None:
    atomic_write_text(tmp_path / "new.txt", "x")
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


@pytest.mark.parametrize("source", ["proc", "probe file"])
def test_umask_is_read_from_proc_or_a_probe_file(tmp_path, monkeypatch, source) -> None:
    if source == "probe file":
        monkeypatch.setattr(atomic, "_PROC_STATUS", str(tmp_path / "no-such-status"))
    old = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        atomic_write_text(tmp_path / "new.txt", "x")
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640


def test_replacing_a_private_file_keeps_its_mode(tmp_path, umask_022) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_writes_never_touch_the_umask(tmp_path, umask_022, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o022)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert calls == []


def test_a_file_created_between_any_two_steps_of_an_atomic_write_is_not_world_writable(
    tmp_path, umask_022, monkeypatch
) -> None:
    # Another thread may run between any two system calls of a write. Simulate it at every one:
    # the old code set the umask to 0 for a moment, and a file created then was 0666.
    real_open, real_close = os.open, os.close
    made = []

    def other_thread_creates_a_file() -> None:
        path = tmp_path / "plain" / f"{len(made)}.txt"
        real_close(real_open(path, os.O_CREAT | os.O_WRONLY, 0o666))
        made.append(path)

    def interleaved(fn):
        def call(*args, **kwargs):
            result = fn(*args, **kwargs)
            other_thread_creates_a_file()
            return result

        return call

    (tmp_path / "plain").mkdir()
    for name in ("umask", "open", "close", "chmod", "fchmod", "replace", "stat", "lstat"):
        monkeypatch.setattr(os, name, interleaved(getattr(os, name)))
    atomic_write_text(tmp_path / "new.txt", "x")
    atomic_write_text(tmp_path / "new.txt", "y")
    monkeypatch.undo()
    assert len(made) >= 4
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in made} == {oct(0o644)}


def test_files_created_by_other_threads_during_atomic_writes_are_not_world_writable(
    tmp_path, umask_022
) -> None:
    # Real threads, briefly: the window is a few bytecodes wide, so this rarely caught the old
    # code (the test above does, deterministically); it guards against new shared state.
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            atomic_write_text(tmp_path / "atomic" / f"{i % 4}.txt", "x")
            i += 1

    (tmp_path / "plain").mkdir()
    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            os.close(os.open(tmp_path / "plain" / f"{i}.txt", os.O_CREAT | os.O_WRONLY, 0o666))
    finally:
        stop.set()
        for t in threads:
            t.join()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "plain").iterdir()}
    assert modes == {0o644}
