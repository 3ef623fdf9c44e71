"""Load checkpoint files without ever running code stored in them.

RVC's own ``.pth`` files hold only tensors, dicts, lists, strings and numbers, so PyTorch's
``weights_only`` unpickler reads them. Anything else in the pickle (a class, a function call) is
refused with a message naming the file, instead of the deep ``UnpicklingError`` PyTorch raises.

Before torch reads a zip checkpoint, its directory is checked (:func:`check_zip_container`):
``torch.save`` stores every entry uncompressed, so a compressed entry, or entries that add up to
more bytes than the file holds, can only be a zip bomb.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from rvc_lora.utils.errors import CheckpointError


def require_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it is a non-empty file, else a one-line :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file; check the path")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: file is empty; download or copy it again")
    return p


def check_zip_container(p: Path) -> None:
    """Refuse a zip checkpoint that would inflate: an entry not STORED, or entry sizes that add up
    to more than the file. Reads only the zip directory. A file that does not start like a zip
    passes (torch reads it as its legacy format, or says what it is); one that does must have a
    directory Python can read, as torch would read it as a zip.
    """
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise _unreadable(p, exc) from None
    if magic != b"PK\x03\x04":  # what torch checks to choose its zip reader
        return
    try:
        with zipfile.ZipFile(p) as zf:
            entries = zf.infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
        raise _unreadable(p, exc, "zip directory") from None
    packed = [e for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointError(
            f"{p}: refused to load: zip entry {packed[0].filename!r} is compressed "
            f"(method {packed[0].compress_type}); torch.save never compresses, so the file was "
            f"made to inflate in memory: get it from a trusted source or re-save it with torch.save"
        )
    total, size = sum(e.file_size for e in entries), p.stat().st_size
    if total > size:
        raise CheckpointError(
            f"{p}: refused to load: its zip entries claim {total} bytes in a {size}-byte file "
            f"(overlapping or lying entries); get it from a trusted source or re-save it"
        )


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with user-facing errors.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a PyTorch file, or its pickle
            refers to Python objects beyond plain containers and tensors.
    """
    p = require_checkpoint_file(path)
    check_zip_container(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "weights_only" in text.lower():
            # The weights-only unpickler names the offending global; keep that part.
            found = re.search(r"GLOBAL (\S+)", text)
            raise CheckpointError(
                f"{p}: refused to load: the file contains Python objects that could run code "
                f"({found.group(1) if found else 'non-tensor objects'}); RVC checkpoints hold only tensors, so "
                f"get the file from a trusted source or re-save its state dict"
            ) from None
        raise _unreadable(p, exc) from None
    except Exception as exc:  # noqa: BLE001 - garbage input can fail anywhere in the unpickler
        raise _unreadable(p, exc) from None


def _unreadable(p: Path, exc: Exception, where: str = "") -> CheckpointError:
    first = str(exc).splitlines()[0][:160] if str(exc) else "truncated"
    return CheckpointError(
        f"{p}: not a readable PyTorch checkpoint ({where or type(exc).__name__}: {first}); the "
        f"file may be truncated or of another format: download it again"
    )
