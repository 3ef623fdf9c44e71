"""Identity of weight files for cache keys, and the error for a missing one."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from rvc_lora.data.cache import file_sha256
from rvc_lora.utils.errors import CheckpointError

# Where the real weights come from (named in the error when a file is missing).
WEIGHT_SOURCES = {
    "hubert_base.pt": "RVC's ContentVec checkpoint, from the HF repo lj1995/VoiceConversionWebUI",
    "rmvpe.pt": "RVC's RMVPE pitch model, from the HF repo lj1995/VoiceConversionWebUI",
}


def require_weights(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it exists, else a one-line error saying where we looked and how to get it."""
    p = Path(path)
    if p.exists():
        return p
    source = WEIGHT_SOURCES.get(p.name, "")
    hint = f" ({source})" if source else ""
    raise CheckpointError(
        f"{what} weights not found at {p.resolve()}; put {p.name}{hint} there, run "
        f"`rvc-lora download`, or point the config at another file"
    )


@functools.lru_cache(maxsize=16)
def _hash(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_identity(path: str | os.PathLike[str], what: str) -> str:
    """sha256 of a weight file (or of a folder's files), cached per (path, size, mtime)."""
    p = require_weights(path, what)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    parts = []
    for f in files:
        st = f.stat()
        parts.append(_hash(str(f.resolve()), st.st_size, st.st_mtime_ns))
    return parts[0] if len(parts) == 1 else hashlib.sha256("".join(parts).encode()).hexdigest()
