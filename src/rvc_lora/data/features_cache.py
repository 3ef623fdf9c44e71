"""Build the feature cache for a folder of recordings: slices, content features, F0.

With one worker everything runs in the main process, file after file. With more (the default
``"auto"``: one per core, capped), a pool of spawned processes (one torch thread each) takes
whole files: slicing, F0, content features and the entry writes, so both cores of a small
machine are busy; on a GPU device the pool slices and computes CPU F0 while the networks run in
the main process. FCPE F0 runs batched over the new slices of a file (slices of one length share
a forward pass). Every path computes each slice with the same code and the same weights, and
the ops whose bits follow the thread count (HuBERT's weight norm, FCPE) run on the main
process's count everywhere, so the entries are the same bytes whichever path wrote them. Entries already in the cache are reused
without loading any model, so a second run over the same folder extracts nothing. Each entry is
extracted under its lock, so parallel jobs sharing a cache (a multirun) extract it once; temp
files left by killed jobs are removed when a build starts.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rvc_lora.data.cache import (
    CacheError,
    Check,
    entry_lock,
    entry_problem,
    refuse_folder,
    remove_stale_temp_files,
    settings_hash,
    write_entry,
)
from rvc_lora.data.entries import check_features
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.slice_jobs import (
    TRAIN_F0_FILTER,
    FileJobs,
    init_worker,
    resolve_workers,
    run_job,
)
from rvc_lora.features.f0 import AUTO, resolve_f0_method
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSettings:
    """What changes the features of a slice (with the weights' hashes, part of the cache key).

    ``f0_method`` may be ``auto`` (:func:`~rvc_lora.features.f0.resolve_f0_method`); the builder
    resolves it before any work, so keys and entries always name the real method.
    """

    version: str = "v2"
    encoder_path: str = "models/hubert_base.pt"
    f0_method: str = "rmvpe"
    rmvpe_path: str = "models/rmvpe.pt"
    fcpe_path: str = "models/fcpe_c_v001.pt"
    device: str = "cpu"
    backend: str = "native"  # content encoder implementation: native | fairseq


@dataclass
class PreparedItem:
    item_id: str
    source: str  # path relative to the input folder
    slice_path: Path
    feature_path: Path
    frames: int  # at 100 frames/s
    span: tuple[int, int] | None = None  # samples of the recording (at the model rate) it holds
    segment: int = 0  # stretch between long silences it comes from (chunks of one overlap)


@dataclass
class PrepareReport:
    items: list[PreparedItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    files_sliced: int = 0
    slices_extracted: int = 0
    slices_reused: int = 0

    def summary(self) -> str:
        sources = len({i.source for i in self.items})
        text = (
            f"{len(self.items)} slices from {sources} files ({self.slices_extracted} "
            f"extracted, {self.slices_reused} from cache)"
        )
        if self.skipped:
            text += f"; {len(self.skipped)} files skipped"
        return text


class FeatureCacheBuilder:
    """Slices and features for every recording under ``input_dir``, cached under ``cache_dir``.

    Args:
        num_workers: processes that prepare files: ``0`` or ``1`` = the main process alone,
            ``N >= 2`` = a pool of ``N``, ``"auto"`` = one per core (at most
            :data:`~rvc_lora.data.slice_jobs.MAX_AUTO_WORKERS`). Never more than there are files.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        prep: PrepSettings,
        features: FeatureSettings,
        num_workers: int | str = 0,
        progress: bool = True,
    ) -> None:
        if features.f0_method == AUTO:
            method = resolve_f0_method(AUTO, features.rmvpe_path, features.fcpe_path)
            features = replace(features, f0_method=method)
        self.cache_dir, self.prep, self.features = Path(cache_dir), prep, features
        self.num_workers, self.progress = num_workers, progress
        resolve_workers(num_workers, 1)  # a bad setting fails here, before any work
        self._encoder = None
        self._f0_models: dict[str, Any] | None = None  # the F0 network, loaded on first use
        # Threads for the content encoder's weight norm (None: this process's own count).
        self.weight_threads: int | None = None

    def feature_key(self) -> str:
        """Hash of the feature settings and of the weight files they use."""
        from rvc_lora.features.weights import weights_identity

        f = self.features
        ident = {
            "version": f.version,
            "f0_method": f.f0_method,
            "sr": self.prep.sr,
            "encoder": weights_identity(f.encoder_path, "content encoder"),
            "backend": f.backend,
            "f0_filter_radius": TRAIN_F0_FILTER,  # entries of the filtered era are rebuilt
        }
        if f.f0_method == "rmvpe":
            ident["rmvpe"] = weights_identity(f.rmvpe_path, "RMVPE")
        if f.f0_method == "fcpe":
            ident["fcpe"] = weights_identity(f.fcpe_path, "FCPE")
        return settings_hash(ident)

    def build(self, input_dir: str | os.PathLike[str], files: list[Path]) -> PrepareReport:
        """Prepare ``files`` (under ``input_dir``); returns items, skips and counts."""
        root = Path(input_dir)
        if self.cache_dir.is_dir():
            remove_stale_temp_files(self.cache_dir)
        prep_key = settings_hash(asdict(self.prep))
        feature_dir = self.cache_dir / "features" / self.feature_key()[:16]
        jobs = FileJobs(
            root,
            files,
            self.cache_dir,
            self.prep,
            prep_key,
            feature_dir,
            self.features.f0_method,
        )
        report = PrepareReport()
        first_of: dict[str, str] = {}  # audio hash -> first file with that audio
        # Items whose entry this build wrote. Pool workers extract before the main process sees
        # that a file is a copy of an earlier one, so the copy may be the one that wrote a shared
        # entry: counting by item keeps the report what the one-process path reports.
        extracted: set[str] = set()
        with _progress(self.progress, len(files)) as advance, self._results(jobs) as results:
            for result in results:
                advance(result["source"])
                if "fatal" in result:
                    raise CacheError(result["fatal"])
                if "error" in result:
                    report.skipped.append((result["source"], result["error"]))
                    log.warning("skipped %s", result["error"])
                    continue
                extracted.update(c["item_id"] for c in result["chunks"] if c.get("extracted"))
                source = result["source"]
                twin = first_of.setdefault(result["file_key"], source)
                if twin != source:  # a copy on both sides of the split would leak validation
                    reason = f"{source}: same audio as {twin}; used once"
                    report.skipped.append((source, reason))
                    log.warning("skipped %s", reason)
                    continue
                report.files_sliced += int(result["sliced"])
                self.finish(result, jobs.feature_check)  # no-op when a worker finished it
                for chunk in result["chunks"]:
                    if chunk.get("extracted"):
                        extracted.add(chunk["item_id"])
                    start, end, segment = chunk["span"]
                    report.items.append(
                        PreparedItem(
                            chunk["item_id"],
                            source,
                            Path(chunk["slice_path"]),
                            Path(chunk["feature_path"]),
                            int(chunk["frames"]),
                            (int(start), int(end)),
                            int(segment),
                        )
                    )
        report.slices_extracted = sum(i.item_id in extracted for i in report.items)
        report.slices_reused = len(report.items) - report.slices_extracted
        if report.skipped:
            reasons = Counter(_reason_kind(r) for _, r in report.skipped)
            log.warning(
                "skipped %d of %d files: %s",
                len(report.skipped),
                len(files),
                ", ".join(f"{n} {k}" for k, n in reasons.most_common()),
            )
        return report

    def finish(self, result: dict[str, Any], check: Check | None = None) -> dict[str, Any]:
        """Extract and write the pending chunks (those holding ``wav16k``) of one file's result.

        Each such chunk gets ``extracted`` (whether this call wrote its entry) and ``frames``, and
        loses its audio and F0, so a pool worker sends back only a few numbers per slice.
        """
        check = check if check is not None else check_features()
        pending = [c for c in result.get("chunks", ()) if "wav16k" in c]
        self._batch_f0(pending)
        for chunk in pending:
            chunk["extracted"] = self._extract(chunk, check)
            del chunk["wav16k"]
            chunk.pop("f0", None)
        return result

    def _batch_f0(self, chunks: list[dict[str, Any]]) -> None:
        """FCPE F0 of the chunks that have none yet, batched (equal lengths share a pass).

        Computed before the entries' locks: an entry another job writes meanwhile only wastes
        its track. Each track is what :func:`compute_f0` gives for that slice alone, up to the
        float rounding of a batched pass.
        """
        if self.features.f0_method != "fcpe":
            return
        todo = [c for c in chunks if c.get("f0") is None]
        if not todo:
            return
        from rvc_lora.features.f0 import compute_f0_fcpe_batch

        fcpe = self._f0_model()["fcpe"]
        with _threads(self.weight_threads):
            tracks = compute_f0_fcpe_batch([c["wav16k"] for c in todo], fcpe)
        for chunk, f0 in zip(todo, tracks, strict=True):
            chunk["f0"] = f0

    @contextlib.contextmanager
    def _results(self, jobs: FileJobs) -> Iterator[Iterator[dict[str, Any]]]:
        """The jobs' results in file order: computed here, or by a pool of worker processes."""
        workers = resolve_workers(self.num_workers, len(jobs))
        if workers > 1:  # no pool for a cache that holds (nearly) everything already
            workers = resolve_workers(workers, sum(jobs.pending(i) for i in range(len(jobs))))
        if workers <= 1:
            yield (jobs[i] for i in range(len(jobs)))
            return
        # A worker that extracts needs the networks on the CPU; a GPU stays with this process.
        finish = None
        if torch.device(self.features.device).type == "cpu":
            finish = FeatureCacheBuilder(self.cache_dir, self.prep, self.features, progress=False)
            finish.weight_threads = torch.get_num_threads()  # see _weights_once
        # spawn: a forked child of a process whose OpenMP pool is running can hang in its first
        # parallel region; the workers import torch afresh instead.
        context = multiprocessing.get_context("spawn")
        initargs = (jobs, finish.finish if finish is not None else None)
        with context.Pool(workers, initializer=init_worker, initargs=initargs) as pool:
            # imap hands the next file to whichever worker is free, and yields in file order.
            yield pool.imap(run_job, range(len(jobs)), chunksize=1)

    def _extract(self, chunk: dict[str, Any], check: Check) -> bool:
        """Write the feature entry of ``chunk`` unless another job did; ``True`` if we did.

        Under the entry's lock, so that parallel jobs (a multirun sharing one cache) extract
        each slice once: the second finds the first's entry when it gets the lock.
        """
        from rvc_lora.features.pitch import coarse_pitch

        path = Path(chunk["feature_path"])
        with entry_lock(path):
            done, _ = entry_problem(path, check=check)
            if done is not None:
                chunk["frames"] = int(done["f0"].shape[0])
                return False
            refuse_folder(path)
            wav16k = chunk["wav16k"]
            f0 = chunk.get("f0")
            if f0 is None:  # RMVPE, or the worker saw another job extracting this entry
                f0 = self._f0(wav16k)
            feats = self._content(wav16k)
            f0 = np.asarray(f0, dtype=np.float32)[: len(wav16k) // 160]
            write_entry(
                path,
                {
                    "feats": feats.astype(np.float16),
                    "f0": f0,
                    "pitch": coarse_pitch(f0).astype(np.int16),
                },
            )
        chunk["frames"] = len(f0)
        return True

    def _content(self, wav16k: np.ndarray) -> np.ndarray:
        """Content features ``[T50, D]`` at 50 frames/s (doubled to 100 when batches are made)."""
        if self._encoder is None:
            from rvc_lora.features.hubert import load_content_encoder

            self._encoder = load_content_encoder(
                self.features.encoder_path, backend=self.features.backend
            ).to(self.features.device)
        wav = torch.from_numpy(wav16k).float().unsqueeze(0).to(self.features.device)
        if self.weight_threads is None:  # the main process: its own thread count
            feats = self._encoder.extract(wav, self.features.version)
        else:
            with _weights_once(self._encoder, self.weight_threads):
                feats = self._encoder.extract(wav, self.features.version)
        return feats[0].float().cpu().numpy()

    def _f0_model(self) -> dict[str, Any]:
        """The F0 network as :func:`compute_f0` keywords (``{}`` for a classical method),
        loaded once per builder (so once per process)."""
        if self._f0_models is None:
            from rvc_lora.features.f0 import network_f0_models

            f = self.features
            self._f0_models = network_f0_models(
                f.f0_method, rmvpe_path=f.rmvpe_path, fcpe_path=f.fcpe_path, device=f.device
            )
        return self._f0_models

    def _f0(self, wav16k: np.ndarray) -> np.ndarray:
        from rvc_lora.features.f0 import NETWORK_METHODS, compute_f0

        method = self.features.f0_method
        if method not in NETWORK_METHODS:
            return compute_f0(wav16k, method, filter_radius=TRAIN_F0_FILTER)
        models = self._f0_model()
        with _threads(self.weight_threads if method == "fcpe" else None):
            return compute_f0(wav16k, method, **models)


@contextlib.contextmanager
def _weights_once(module: nn.Module, threads: int) -> Iterator[None]:
    """Compute ``module``'s parametrized weights once, on ``threads`` threads, for the duration.

    HuBERT's positional conv is weight-normed, and the norm is a parallel reduction whose last
    bits depend on the number of torch threads; every other op of the encoder gives the same
    bits on one thread or several. A pool worker (one thread) computes that weight on the main
    process's thread count, and so writes the features the main process writes.
    """
    from torch.nn.utils import parametrize

    with parametrize.cached():
        own = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for m in module.modules():
                if parametrize.is_parametrized(m):
                    for name in m.parametrizations:
                        getattr(m, name)  # fills the cache
        finally:
            torch.set_num_threads(own)
        yield


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Run on ``threads`` torch threads for the duration (``None``: this process's own count).

    FCPE's last bits follow the thread count (its reductions split by thread), so a pool
    worker (one thread) runs it on the main process's count and writes the main process's F0.
    """
    own = torch.get_num_threads()
    if threads is None or threads == own:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def _reason_kind(reason: str) -> str:
    """Short category of a skip reason for the end-of-run summary."""
    for key in (
        "empty",
        "too short",
        "silence",
        "same audio",
        "NaN",
        "no speech",
        "not decodable",
        "not readable",
        "no samples",
    ):
        if key in reason:
            return key
    return "unreadable"


class _progress:
    """Rich progress bar with ETA over files (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda _name: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]preparing[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._bar.start()
        task = self._bar.add_task("", total=self.total)
        return lambda name: self._bar.update(task, advance=1, description=name[-40:])

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.stop()


class NoUsableAudioError(RvcLoraError, ValueError):
    """A folder in which no file gave a usable slice."""
