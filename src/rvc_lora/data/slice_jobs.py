"""The per-file part of preparing a folder: slice each recording once (under a lock, across
jobs) and compute classical F0 (pm, harvest, dio) for slices that have no features yet; the
network methods (:data:`~rvc_lora.features.f0.NETWORK_METHODS`) are left to the finisher, which
holds the loaded network and batches it.

Run in the main process (one worker) or in a pool of worker processes (:func:`init_worker`,
:func:`run_job`), where it may also finish each file (content features, entry writes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rvc_lora.audio import AudioError
from rvc_lora.data.cache import (
    CacheError,
    entry_busy,
    entry_lock,
    read_entry,
    read_json,
    refuse_folder,
    write_entry,
    write_json,
)
from rvc_lora.data.entries import check_features, check_slice
from rvc_lora.data.preprocess import PrepSettings, slice_recording
from rvc_lora.features.weights import file_sha256
from rvc_lora.utils.errors import ConfigError

# "auto" takes one worker per core up to this: each worker holds its own content encoder
# (HuBERT-Base: ~380 MB in fp32), and the files of one voice rarely keep more processes busy.
MAX_AUTO_WORKERS = 8
# RVC median-filters harvest F0 only at conversion; its training extraction is unfiltered.
TRAIN_F0_FILTER = 0


class FileJobs:
    """One job per source file: slice (or reuse slices), F0 for new slices.

    Picklable (paths, settings and a picklable entry check), so a process pool gets a copy.
    """

    def __init__(
        self,
        root: Path,
        files: list[Path],
        cache_dir: Path,
        prep: PrepSettings,
        prep_key: str,
        feature_dir: Path,
        f0_method: str,
    ) -> None:
        self.root, self.files, self.cache_dir = root, files, cache_dir
        self.prep, self.prep_key, self.feature_dir, self.f0_method = (
            prep,
            prep_key,
            feature_dir,
            f0_method,
        )
        # The width is not checked: the feature folder is keyed by the encoder's weights.
        self.feature_check = check_features()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        rel = path.relative_to(self.root).as_posix()
        try:
            return self._run(path, rel)
        except AudioError as exc:
            return {"source": rel, "error": str(exc)}
        except CacheError as exc:  # raised again in the main process, as one line
            return {"source": rel, "fatal": str(exc)}

    def pending(self, index: int) -> bool:
        """Whether file ``index`` may need work: slicing, or a feature entry that is not there.

        A quick look (the manifest and which files exist; no entry is read), so that a build
        over a filled cache does not start a pool; the job itself still checks every entry.
        """
        path = self.files[index]
        try:
            file_key = self._file_key(path)
        except OSError:
            return True  # the job reports it
        slice_dir = self.cache_dir / "slices" / file_key
        manifest = read_json(slice_dir / "manifest.json")
        if not _complete(manifest, slice_dir):
            return True
        spans = range(len(manifest["spans"]))
        return not all((self.feature_dir / f"{file_key}-{i:04d}.npz").is_file() for i in spans)

    def _file_key(self, path: Path) -> str:
        return f"{file_sha256(path)[:16]}-{self.prep_key[:12]}"

    def _run(self, path: Path, rel: str, reslice: bool = False) -> dict[str, Any]:
        from rvc_lora.features.f0 import NETWORK_METHODS, compute_f0

        file_key = self._file_key(path)
        slice_dir = self.cache_dir / "slices" / file_key
        manifest, sliced = self._slices(path, rel, slice_dir, reslice)
        chunks = []
        for i, (start, end, segment) in enumerate(manifest["spans"]):
            item_id = f"{file_key}-{i:04d}"
            slice_path = slice_dir / f"{i:04d}.npz"
            feature_path = self.feature_dir / f"{item_id}.npz"
            # Read even when its features are cached: training reads it too, and only this
            # path can repair it.
            arrays = read_entry(slice_path, check=check_slice(self.prep.sr))
            if arrays is None:  # damaged since the manifest was written: slice again
                if reslice:
                    raise AudioError(f"{slice_path}: cached slice unreadable after rebuild")
                return self._run(path, rel, reslice=True)
            record = {
                "item_id": item_id,
                "slice_path": slice_path,
                "feature_path": feature_path,
                "span": (start, end, segment),
            }
            feats = read_entry(feature_path, check=self.feature_check)
            if feats is not None:
                record["frames"] = int(feats["f0"].shape[0])
            else:
                wav16k = arrays["wav16k"]
                record["wav16k"] = wav16k
                # RMVPE and FCPE are networks (loaded once by the finisher, maybe on a GPU, FCPE
                # batched over the file's slices); and an entry that another job is extracting
                # right now will be there when the main process takes its lock.
                if self.f0_method not in NETWORK_METHODS and not entry_busy(feature_path):
                    record["f0"] = compute_f0(wav16k, self.f0_method, filter_radius=TRAIN_F0_FILTER)
            chunks.append(record)
        return {"source": rel, "file_key": file_key, "chunks": chunks, "sliced": sliced}

    def _slices(
        self, path: Path, rel: str, slice_dir: Path, reslice: bool
    ) -> tuple[dict[str, Any], bool]:
        """The slice manifest of ``path``, slicing it first if needed (once across jobs)."""
        manifest_path = slice_dir / "manifest.json"
        refuse_folder(manifest_path)
        with entry_lock(manifest_path):
            manifest = read_json(manifest_path)
            if not reslice and _complete(manifest, slice_dir):
                return manifest, False
            slices = slice_recording(path, self.prep)
            for i, s in enumerate(slices):
                target = slice_dir / f"{i:04d}.npz"
                refuse_folder(target)
                write_entry(target, {"wav": s.wav, "wav16k": s.wav16k})
            manifest = {
                "count": len(slices),
                "source": rel,
                "spans": [[int(s.start), int(s.end), s.segment] for s in slices],
            }
            write_json(manifest_path, manifest)
        return manifest, True


def _complete(manifest: Any, slice_dir: Path) -> bool:
    """A manifest with every slice's place in the recording and every slice file present."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("spans"), list):
        return False
    spans = manifest["spans"]
    if not all(
        isinstance(s, list)
        and len(s) == 3
        and all(type(v) is int for v in s)
        and 0 <= s[0] < s[1]
        and s[2] >= 0
        for s in spans
    ):
        return False
    return bool(spans) and all((slice_dir / f"{i:04d}.npz").is_file() for i in range(len(spans)))


def resolve_workers(setting: int | str | None, files: int) -> int:
    """Worker processes for ``files`` files under the setting ``data.prepare_workers``.

    Raises:
        ConfigError: neither a non-negative integer nor ``"auto"``.
    """
    if setting is None or setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        wanted = min(cores or os.cpu_count() or 1, MAX_AUTO_WORKERS)
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 0:
        wanted = setting
    else:
        raise ConfigError(
            f"data.prepare_workers={setting!r}: use 'auto' (one per core), 1 (no worker "
            f"processes) or a number of processes"
        )
    return max(1, min(wanted, files))


# One file's result -> the same result with its pending chunks extracted and written.
Finisher = Callable[[dict[str, Any]], dict[str, Any]]
_worker_state: tuple[FileJobs, Finisher | None] | None = None


def init_worker(jobs: FileJobs, finish: Finisher | None) -> None:
    """Pool initializer: keep the jobs (and the finisher, if the worker extracts too).

    One torch thread per worker: the pool already has one process per core, and more threads
    than cores only add contention.
    """
    import torch

    torch.set_num_threads(1)
    global _worker_state
    _worker_state = (jobs, finish)


def run_job(index: int) -> dict[str, Any]:
    """Job ``index`` in a pool worker: the result :meth:`FileJobs.__getitem__` gives, finished
    (content features extracted and written) when the pool was given a finisher."""
    assert _worker_state is not None, "run_job runs in a pool started with init_worker"
    jobs, finish = _worker_state
    result = jobs[index]
    if finish is not None and "chunks" in result:
        result = finish(result)
    return result
