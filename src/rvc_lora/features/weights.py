"""Pretrained weight files: the error for a missing one, and their identity for cache keys."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from rvc_lora.utils.errors import CheckpointError

# What each kind of weights is and where it comes from, named when a file is missing.
WEIGHT_SOURCES = {
    "content encoder": "RVC's hubert_base.pt (ContentVec, 190 MB)",
    "RMVPE": "RVC's rmvpe.pt (181 MB)",
}
# Weights that come from elsewhere than RVC's Hugging Face repo: the whole "how to get it".
_OWN_SOURCE = {
    "FCPE": "run `rvc-lora download fcpe` (FCPE's fcpe_c_v001.pt, 43 MB, from the torchfcpe 0.0.4 wheel on PyPI)",  # fmt: skip
}
_WHERE = "from the Hugging Face repo lj1995/VoiceConversionWebUI, or run `rvc-lora download`"


def require_weights(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it exists, else a one-line error saying where we looked and how to get it."""
    p = Path(path)
    if p.exists():
        return p
    if what in _OWN_SOURCE:
        raise CheckpointError(
            f"{what} weights not found: looked for {p.resolve()}; {_OWN_SOURCE[what]}, or point "
            f"the config at the file"
        )
    source = WEIGHT_SOURCES.get(what, "the file")
    raise CheckpointError(
        f"{what} weights not found: looked for {p.resolve()}; get {source} {_WHERE}, and point "
        f"the config at it"
    )


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_identity(path: str | os.PathLike[str], what: str = "model") -> str:
    """sha256 of a weight file, or of a folder's files with their relative names.

    Cached per (path, size, mtime), so asking again costs nothing.
    """
    p = require_weights(path, what)
    if p.is_file():
        st = p.stat()
        return _cached_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)
    outer = hashlib.sha256()
    for f in sorted(f for f in p.rglob("*") if f.is_file()):
        st = f.stat()
        digest = _cached_sha256(str(f.resolve()), st.st_size, st.st_mtime_ns)
        outer.update(f"{f.relative_to(p).as_posix()}:{digest}\n".encode())
    return outer.hexdigest()
