"""Write files so that a reader never sees half of one: temp file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

_PROC_STATUS = "/proc/self/status"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    The new file keeps the mode of the file it replaces (a private 0600 file stays private);
    a new one gets ``0666 & ~umask``, as a file written in place would. On any exception the
    temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = _existing_mode(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp makes the file owner-only.
    os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically; returns the final path."""
    # Through a file handle: given a path, torch.save names the zip's inner folder after the
    # (random) temp file, so equal objects would give different bytes and hashes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically; returns the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the final path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _existing_mode(target: Path) -> int | None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    # A symlink is replaced by a regular file, which takes no mode from the link.
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def current_umask() -> int:
    """The process umask, read without changing it.

    Setting it to read it (``os.umask``) would leave a moment in which files that other threads
    create get the wrong mode, so Linux's ``/proc/self/status`` is read instead; elsewhere the
    mode of a fresh file created with 0777 gives it.
    """
    with contextlib.suppress(OSError, ValueError):
        with open(_PROC_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with tempfile.TemporaryDirectory(prefix="rvc-lora-umask-") as tmp:
        probe = os.path.join(tmp, "probe")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777))
        return 0o777 & ~stat.S_IMODE(os.stat(probe).st_mode)
