"""On-disk cache of preprocessed slices and their features, never trusted blindly.

Every entry is an ``.npz`` holding its arrays plus a sha256 of their bytes. Entries are keyed by
the hash of the source audio bytes and of every setting that changes the result, so a changed
file or setting makes a new key instead of reusing a stale entry. A missing, truncated or
corrupted entry reads as absent and is rebuilt. Writes are atomic (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvc_lora.utils.atomic import atomic_path

log = logging.getLogger(__name__)
_CHECKSUM = "__sha256__"


def settings_hash(settings: Any) -> str:
    """Stable hash of a dataclass / mapping of settings (JSON with sorted keys)."""
    data = asdict(settings) if is_dataclass(settings) else dict(settings)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_entry(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` and their checksum to ``path`` (``.npz``) atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_CHECKSUM] = np.array(_arrays_sha256(payload))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **payload)
    return Path(path)


def read_entry(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The arrays of a valid entry, or ``None`` (missing, unreadable or checksum mismatch).

    A damaged entry is deleted so that the next build replaces it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        stored = str(arrays.pop(_CHECKSUM))
        if stored != _arrays_sha256(arrays):
            raise ValueError("checksum mismatch")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("cache entry %s is damaged (%s); rebuilding it", path, exc)
        path.unlink(missing_ok=True)
        return None
    return arrays


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """JSON file written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """Parsed JSON, or ``None`` for a missing or unparsable file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
