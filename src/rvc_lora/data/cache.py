"""On-disk cache of preprocessed slices and their features, never trusted blindly.

Every entry is an ``.npz`` holding its arrays plus a sha256 of their bytes. Entries are keyed by
the hash of the source audio bytes and of every setting that changes the result, so a changed
file or setting makes a new key instead of reusing a stale entry. A missing, truncated or
corrupted entry reads as absent and the extraction path rebuilds it (under a per-entry lock, so
parallel jobs extract it once). Readers never delete: a transient I/O error (EMFILE in one job of
a multirun) propagates instead of destroying an entry that other jobs are reading. Writes are
atomic (temp file, then rename); temp files of killed jobs are removed when the cache is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvc_lora.features.index import RetrievalIndexError
from rvc_lora.utils.atomic import atomic_path
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)
_CHECKSUM = "__sha256__"
_KEY = "__key__"
FOLDER = "is a folder, not a file"
# A cache write takes well under a second and keeps touching its temp file; one untouched for an
# hour belongs to a killed job (a merely paused writer would fail loudly at its rename).
STALE_TMP_SECONDS = 3600.0

Check = Callable[[Mapping[str, np.ndarray]], "str | None"]


class CacheError(RvcLoraError, ValueError):
    """A cache entry that training needs is missing or damaged; the message names it and the fix."""


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


def write_entry(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], key: str | None = None
) -> Path:
    """Write ``arrays`` (and ``key``, if given) with their checksum to ``path`` atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if key is not None:
        payload[_KEY] = np.array(key)
    payload[_CHECKSUM] = np.array(_arrays_sha256(payload))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **payload)
    return Path(path)


def entry_problem(
    path: str | os.PathLike[str], key: str | None = None, check: Check | None = None
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)`` for a valid entry, ``(None, why)`` for a missing or damaged one.

    Raises:
        OSError: an I/O error that says nothing about the entry (e.g. EMFILE, EIO): the caller
            retries or fails, and the entry stays on disk.
    """
    path = Path(path)
    if path.is_dir():
        return None, FOLDER
    if not path.is_file():
        return None, "missing"
    try:
        with zipfile.ZipFile(path) as zf:
            # np.savez stores; a compressed member could inflate to any size (a zip bomb).
            if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                return None, "not an entry (compressed members; entries are never compressed)"
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except OSError as exc:
        if exc.errno is not None:  # the system failed, not the file's format
            raise
        return None, f"not an entry ({exc})"
    except MemoryError:  # an array header claiming more than the machine holds
        return None, "not an entry (an array larger than memory)"
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile, IndexError) as exc:
        return None, f"not an entry ({type(exc).__name__}: {exc})"
    stored = arrays.pop(_CHECKSUM, None)
    if stored is None or stored.shape != () or stored.dtype.kind != "U":
        return None, "no checksum"
    if str(stored) != _arrays_sha256(arrays):
        return None, "checksum mismatch"
    stored_key = arrays.pop(_KEY, None)
    if key is not None and (stored_key is None or str(stored_key) != key):
        return None, "written for another key"
    problem = check(arrays) if check is not None else None
    if problem:
        return None, problem
    return arrays, None


def read_entry(
    path: str | os.PathLike[str], key: str | None = None, check: Check | None = None
) -> dict[str, np.ndarray] | None:
    """The arrays of a valid entry, or ``None`` (missing or damaged: rebuild it).

    Never deletes anything; transient I/O errors propagate (see :func:`entry_problem`).
    """
    arrays, problem = entry_problem(path, key, check)
    if problem is not None and problem != "missing":
        log.warning("cache entry %s is damaged (%s); rebuilding it", path, problem)
    return arrays


def load_entry(
    path: str | os.PathLike[str],
    key: str | None = None,
    check: Check | None = None,
    retries: int = 3,
) -> dict[str, np.ndarray]:
    """The arrays of a valid entry, for readers that cannot rebuild it (training).

    Transient I/O errors are retried a few times (a multirun sharing the machine can briefly
    run out of file handles); the entry is never deleted.

    Raises:
        CacheError: missing or damaged entry, or an I/O error that persists.
    """
    for attempt in range(retries + 1):
        try:
            arrays, problem = entry_problem(path, key, check)
            break
        except OSError as exc:
            if attempt == retries:
                raise CacheError(
                    f"{path}: cannot read cache entry ({exc.strerror or exc}); "
                    f"check free file handles and disk, then resume the run"
                ) from None
            time.sleep(0.05 * 4**attempt)
    if problem is not None:
        fix = "delete it, then run" if problem == FOLDER else "run"
        raise CacheError(
            f"{path}: cache entry {problem}; {fix} the preparation again "
            f"(python -m rvc_lora.data.prepare) to rebuild it"
        )
    assert arrays is not None
    return arrays


@contextlib.contextmanager
def entry_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive lock on ``path`` across processes (``flock`` on ``<path>.lock``).

    The lock file is never removed: deleting it would let two jobs lock different files.
    """
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def refuse_folder(path: str | os.PathLike[str]) -> None:
    """Refuse to build an entry where a folder stands (deleting someone's folder is not ours)."""
    if Path(path).is_dir():
        raise CacheError(
            f"{path}: cache entry {FOLDER}; delete it, then run the preparation again "
            f"(python -m rvc_lora.data.prepare)"
        )


def entry_busy(path: str | os.PathLike[str]) -> bool:
    """Whether another job holds :func:`entry_lock` on ``path`` right now (it is extracting)."""
    lock = Path(f"{path}.lock")
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale_temp_files(root: str | os.PathLike[str]) -> int:
    """Delete temp files of killed writers under ``root``; returns how many."""
    removed = 0
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in Path(root).rglob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    if removed:
        log.info("removed %d temp files left by killed jobs under %s", removed, root)
    return removed


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


def features_from_cache(feature_files: Iterable[str | os.PathLike[str]]) -> np.ndarray:
    """Concatenate the ``feats`` arrays (``[T, D]``, stored float16) of feature-cache entries.

    Returns:
        ``[sum T, D]`` float32, in the order given.
    Raises:
        RetrievalIndexError: no files, a damaged/missing entry, no ``feats``, or mixed widths.
    """
    parts: list[np.ndarray] = []
    for f in feature_files:
        entry = read_entry(f)
        if entry is None:
            raise RetrievalIndexError(f"{f}: feature cache entry missing or damaged; re-extract")
        if "feats" not in entry:
            raise RetrievalIndexError(f"{f}: cache entry has no 'feats' array ({sorted(entry)})")
        feats = np.asarray(entry["feats"], dtype=np.float32)
        if feats.ndim != 2 or (parts and feats.shape[1] != parts[0].shape[1]):
            first = parts[0].shape[1] if parts else "?"
            raise RetrievalIndexError(
                f"{f}: feats shape {list(feats.shape)} does not fit [T, {first}]"
            )
        parts.append(feats)
    if not parts:
        raise RetrievalIndexError("features_from_cache: no feature files given")
    return np.concatenate(parts, axis=0)
