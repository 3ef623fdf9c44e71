"""Build the feature cache for a folder of recordings: slices, content features, F0.

Files are sliced and their F0 computed in DataLoader worker processes (CPU-bound); the content
encoder (and RMVPE, which wants the GPU) run in the main process. Entries already in the cache
are reused without loading any model, so a second run over the same folder extracts nothing.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rvc_lora.audio import AudioError
from rvc_lora.data.cache import read_entry, read_json, settings_hash, write_entry, write_json
from rvc_lora.data.preprocess import PrepSettings, slice_recording
from rvc_lora.features.weights import file_sha256
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)
# RVC median-filters harvest F0 only at conversion; its training extraction is unfiltered.
TRAIN_F0_FILTER = 0


@dataclass(frozen=True)
class FeatureSettings:
    """What changes the features of a slice (with the weights' hashes, part of the cache key)."""

    version: str = "v2"
    encoder_path: str = "models/hubert_base.pt"
    f0_method: str = "rmvpe"
    rmvpe_path: str = "models/rmvpe.pt"
    device: str = "cpu"
    backend: str = "native"  # content encoder implementation: native | fairseq


@dataclass
class PreparedItem:
    item_id: str
    source: str  # path relative to the input folder
    slice_path: Path
    feature_path: Path
    frames: int  # at 100 frames/s


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


class _FileJobs(Dataset):
    """One job per source file, run in a worker: slice (or reuse slices), F0 for new slices."""

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

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        rel = path.relative_to(self.root).as_posix()
        try:
            return self._run(path, rel)
        except AudioError as exc:
            return {"source": rel, "error": str(exc)}

    def _run(self, path: Path, rel: str, retry: bool = True) -> dict[str, Any]:
        from rvc_lora.features.f0 import compute_f0

        file_key = f"{file_sha256(path)[:16]}-{self.prep_key[:12]}"
        slice_dir = self.cache_dir / "slices" / file_key
        manifest = read_json(slice_dir / "manifest.json")
        sliced = False
        if manifest is None or not all(
            (slice_dir / f"{i:04d}.npz").is_file() for i in range(manifest["count"])
        ):
            slices = slice_recording(path, self.prep)
            for i, s in enumerate(slices):
                write_entry(slice_dir / f"{i:04d}.npz", {"wav": s.wav, "wav16k": s.wav16k})
            manifest = {"count": len(slices), "source": rel}
            write_json(slice_dir / "manifest.json", manifest)
            sliced = True
        chunks = []
        for i in range(manifest["count"]):
            item_id = f"{file_key}-{i:04d}"
            slice_path = slice_dir / f"{i:04d}.npz"
            feature_path = self.feature_dir / f"{item_id}.npz"
            record = {"item_id": item_id, "slice_path": slice_path, "feature_path": feature_path}
            feats = read_entry(feature_path)
            if feats is not None:
                record["frames"] = int(feats["f0"].shape[0])
            else:
                arrays = read_entry(slice_path)
                if arrays is None:  # damaged since the manifest was written: slice again
                    if not retry:
                        raise AudioError(f"{slice_path}: cached slice unreadable after rebuild")
                    (slice_dir / "manifest.json").unlink(missing_ok=True)
                    return self._run(path, rel, retry=False)
                wav16k = arrays["wav16k"]
                record["wav16k"] = wav16k
                if self.f0_method != "rmvpe":  # RMVPE is a network: main process, maybe GPU
                    record["f0"] = compute_f0(wav16k, self.f0_method, filter_radius=TRAIN_F0_FILTER)
            chunks.append(record)
        return {"source": rel, "chunks": chunks, "sliced": sliced}


def _first(batch: list[Any]) -> Any:
    return batch[0]


class FeatureCacheBuilder:
    """Slices and features for every recording under ``input_dir``, cached under ``cache_dir``."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        prep: PrepSettings,
        features: FeatureSettings,
        num_workers: int = 0,
        progress: bool = True,
    ) -> None:
        self.cache_dir, self.prep, self.features = Path(cache_dir), prep, features
        self.num_workers, self.progress = num_workers, progress
        self._encoder = None
        self._rmvpe = None

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
        return settings_hash(ident)

    def build(self, input_dir: str | os.PathLike[str], files: list[Path]) -> PrepareReport:
        """Prepare ``files`` (under ``input_dir``); returns items, skips and counts."""
        from rvc_lora.features.pitch import coarse_pitch

        root = Path(input_dir)
        prep_key = settings_hash(asdict(self.prep))
        feature_dir = self.cache_dir / "features" / self.feature_key()[:16]
        jobs = _FileJobs(
            root, files, self.cache_dir, self.prep, prep_key, feature_dir, self.features.f0_method
        )
        loader = DataLoader(jobs, batch_size=1, num_workers=self.num_workers, collate_fn=_first)
        report = PrepareReport()
        with _progress(self.progress, len(files)) as advance:
            for result in loader:
                advance(result["source"])
                if "error" in result:
                    report.skipped.append((result["source"], result["error"]))
                    log.warning("skipped %s", result["error"])
                    continue
                report.files_sliced += int(result["sliced"])
                for chunk in result["chunks"]:
                    if "wav16k" in chunk:
                        f0 = chunk.get("f0")
                        if f0 is None:
                            f0 = self._rmvpe_f0(chunk["wav16k"])
                        feats = self._content(chunk["wav16k"])
                        n = len(chunk["wav16k"]) // 160
                        f0 = np.asarray(f0, dtype=np.float32)[:n]
                        write_entry(
                            chunk["feature_path"],
                            {
                                "feats": feats.astype(np.float16),
                                "f0": f0,
                                "pitch": coarse_pitch(f0).astype(np.int16),
                            },
                        )
                        chunk["frames"] = len(f0)
                        report.slices_extracted += 1
                    else:
                        report.slices_reused += 1
                    report.items.append(
                        PreparedItem(
                            chunk["item_id"],
                            result["source"],
                            Path(chunk["slice_path"]),
                            Path(chunk["feature_path"]),
                            int(chunk["frames"]),
                        )
                    )
        if report.skipped:
            reasons = Counter(_reason_kind(r) for _, r in report.skipped)
            log.warning(
                "skipped %d of %d files: %s",
                len(report.skipped),
                len(files),
                ", ".join(f"{n} {k}" for k, n in reasons.most_common()),
            )
        return report

    def _content(self, wav16k: np.ndarray) -> np.ndarray:
        """Content features ``[T50, D]`` at 50 frames/s (doubled to 100 when batches are made)."""
        if self._encoder is None:
            from rvc_lora.features.hubert import load_content_encoder

            self._encoder = load_content_encoder(
                self.features.encoder_path, backend=self.features.backend
            ).to(self.features.device)
        wav = torch.from_numpy(wav16k).float().unsqueeze(0).to(self.features.device)
        return self._encoder.extract(wav, self.features.version)[0].float().cpu().numpy()

    def _rmvpe_f0(self, wav16k: np.ndarray) -> np.ndarray:
        from rvc_lora.features.f0 import compute_f0

        if self._rmvpe is None:
            from rvc_lora.features.rmvpe import load_rmvpe

            self._rmvpe = load_rmvpe(self.features.rmvpe_path, device=self.features.device)
        return compute_f0(wav16k, "rmvpe", rmvpe=self._rmvpe)


def _reason_kind(reason: str) -> str:
    """Short category of a skip reason for the end-of-run summary."""
    for key in (
        "empty",
        "too short",
        "silence",
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
