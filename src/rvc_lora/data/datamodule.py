"""``VoiceDataModule``: a folder of one voice's recordings as training and validation batches."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rvc_lora.audio import find_audio_files
from rvc_lora.data.cache import load_entry
from rvc_lora.data.entries import check_features, check_slice
from rvc_lora.data.features_cache import (
    FeatureCacheBuilder,
    FeatureSettings,
    NoUsableAudioError,
    PreparedItem,
    PrepareReport,
)
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.slicer import SlicerConfig
from rvc_lora.data.subset import budget_seconds, seconds, select_subset
from rvc_lora.features.f0 import resolve_f0_method
from rvc_lora.spectral import RVC_RELEASE, MelNumerics, linear_spectrogram
from rvc_lora.spectral import mel_numerics as named_mel_numerics
from rvc_lora.utils.determinism import EpochSampler, ItemKey, ResumableLoader
from rvc_lora.utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SpectrogramSettings:
    hop_length: int
    n_fft: int
    win_length: int | None = None
    numerics: MelNumerics = RVC_RELEASE


class VoiceDataset(Dataset):
    """Cached slices as RVC training items, all streams at 100 frames/s.

    Each item: ``phone [T, D]`` (content features doubled from 50 fps), ``pitch [T]`` (coarse),
    ``pitchf [T]`` (Hz), ``spec [F, T]``, ``wav [T * hop]`` and ``sid``. Streams are trimmed to
    the shortest, as RVC does; with ``max_frames`` a random window of that length is taken.

    The window is a pure function of ``(seed, epoch, index)``: indexed with an :class:`ItemKey`
    (what :class:`EpochSampler` yields) it moves from epoch to epoch, and a resumed run crops
    exactly as an uninterrupted one, in any worker process. A plain ``int`` index is epoch 0.

    Entries are checked before use (``sample_rate``, when given, also checks that a slice's
    two rates agree); a damaged one stops training with a one-line :class:`CacheError`.
    """

    def __init__(
        self,
        items: list[PreparedItem],
        spec: SpectrogramSettings,
        speaker_id: int | Sequence[int] = 0,
        max_frames: int | None = 900,
        random_crop: bool = True,
        seed: int = 0,
        sample_rate: int | None = None,
    ) -> None:
        self.items, self.spec = items, spec
        self.checks = check_slice(sample_rate), check_features()
        self.speaker_ids = (
            [speaker_id] * len(items) if isinstance(speaker_id, int) else list(speaker_id)
        )
        self.max_frames, self.random_crop, self.seed = max_frames, random_crop, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | ItemKey) -> dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        # Never deletes: other jobs may be reading the same entries (CacheError if damaged).
        audio = load_entry(item.slice_path, check=self.checks[0])
        feats = load_entry(item.feature_path, check=self.checks[1])
        hop = self.spec.hop_length
        phone = np.repeat(feats["feats"].astype(np.float32), 2, axis=0)  # 50 -> 100 frames/s
        t = min(len(phone), len(feats["f0"]), len(audio["wav"]) // hop)
        start = 0
        if self.max_frames is not None and t > self.max_frames:
            if self.random_crop:
                rng = np.random.default_rng((self.seed, epoch, index))
                start = int(rng.integers(0, t - self.max_frames + 1))
            t = self.max_frames
        wav = torch.from_numpy(audio["wav"][start * hop : (start + t) * hop].copy())
        return {
            "phone": torch.from_numpy(phone[start : start + t]),
            "pitch": torch.from_numpy(feats["pitch"][start : start + t].astype(np.int64)),
            "pitchf": torch.from_numpy(feats["f0"][start : start + t].astype(np.float32)),
            "spec": linear_spectrogram(
                wav[None], self.spec.n_fft, hop, self.spec.win_length, self.spec.numerics
            )[0],
            "wav": wav,
            "sid": torch.tensor(self.speaker_ids[index]),
        }


def collate_voice(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Zero-pad items to the longest; ``lengths`` in frames, ``wav_lengths`` in samples."""
    lengths = torch.tensor([b["phone"].shape[0] for b in batch])
    t, n = int(lengths.max()), max(b["wav"].shape[0] for b in batch)

    def pad(key: str, size: int) -> torch.Tensor:
        return torch.stack([_pad_time(b[key], size, time_first=key == "phone") for b in batch])

    return {
        "phone": pad("phone", t),
        "pitch": pad("pitch", t),
        "pitchf": pad("pitchf", t),
        "spec": pad("spec", t),
        "wav": pad("wav", n).unsqueeze(1),
        "lengths": lengths,
        "wav_lengths": torch.tensor([b["wav"].shape[0] for b in batch]),
        "sid": torch.stack([b["sid"] for b in batch]),
    }


def _pad_time(x: torch.Tensor, size: int, time_first: bool) -> torch.Tensor:
    if time_first:  # [T, D]
        return torch.nn.functional.pad(x, (0, 0, 0, size - x.shape[0]))
    return torch.nn.functional.pad(x, (0, size - x.shape[-1]))


def split_by_source(
    items: list[PreparedItem], val_fraction: float, seed: int
) -> tuple[list[PreparedItem], list[PreparedItem]]:
    """Deterministic train/val split in which no audio is on both sides.

    Whole source files are held out. With a single file, whole stretches between its long
    silences are; with a single stretch (its chunks overlap by 0.3 s), the last chunk is, and the
    training chunks that share audio with it are left out. A single slice cannot be split:
    validation then reuses it, with a warning.
    """
    sources = sorted({i.source for i in items})
    if len(sources) < 2:
        return _split_one_recording(items, val_fraction)
    rng = random.Random(seed)
    shuffled = sources[:]
    rng.shuffle(shuffled)
    n_val = min(max(1, round(val_fraction * len(sources))), len(sources) - 1)
    val_sources = set(shuffled[:n_val])
    return (
        [i for i in items if i.source not in val_sources],
        [i for i in items if i.source in val_sources],
    )


def _split_one_recording(
    items: list[PreparedItem], val_fraction: float
) -> tuple[list[PreparedItem], list[PreparedItem]]:
    segments = sorted({i.segment for i in items})
    if len(segments) >= 2:  # stretches between long silences share no audio
        n_val = min(max(1, round(val_fraction * len(segments))), len(segments) - 1)
        held = set(segments[-n_val:])
        log.info(
            "validation: one recording; holding out its last %d of %d stretches between pauses",
            n_val,
            len(segments),
        )
        return [i for i in items if i.segment not in held], [i for i in items if i.segment in held]
    if len(items) >= 2 and all(i.span is not None for i in items):
        val = max(items, key=lambda i: i.span)
        train = [i for i in items if not _overlap(i, val)]
        if train:
            log.warning(
                "validation: one recording without long pauses; holding out its last %.1f s of "
                "audio and leaving out %d training slice(s) that share audio with it; add "
                "recordings for a split by file",
                val.frames / 100,
                len(items) - len(train) - 1,
            )
            return train, [val]
    log.warning(
        "validation: too little audio for an honest split (%d slice(s) from one recording): "
        "validation reuses the training audio, so its scores measure fit, not generalisation; "
        "add recordings",
        len(items),
    )
    return items, items


def _overlap(a: PreparedItem, b: PreparedItem) -> bool:
    assert a.span is not None and b.span is not None
    return a.source == b.source and a.span[0] < b.span[1] and b.span[0] < a.span[1]


class VoiceDataModule(L.LightningDataModule):
    """One voice's recordings -> cached features -> RVC batches.

    ``prepare_data`` slices and extracts once (cached); ``setup`` splits by source file, or,
    with ``heldout_dir``, validates on that folder and trains on every file of ``input_dir``;
    then ``max_seconds`` keeps a subset of the training slices (:func:`select_subset`).

    Args:
        input_dir: folder of recordings (searched recursively).
        cache_dir: where slices and features are kept (reused across runs and settings).
        sample_rate, hop_length, n_fft: the model's audio settings.
        version: content features: ``v1`` (256-d) or ``v2`` (768-d).
        f0_method: ``rmvpe``, ``fcpe``, ``harvest``, ``pm``, ``dio``, or ``auto`` (resolved here,
            once: ``rmvpe`` when ``rmvpe_path`` exists, else ``fcpe`` when ``fcpe_path`` does).
        rmvpe_path, fcpe_path: the two F0 networks' weights.
        mel_numerics: the spectrogram eps of the items' ``spec`` (``features.mel_numerics``).
        max_seconds: train on at most this much audio (``None`` or ``"all"``: all of it).
        subset_seed: picks that audio (``None``: ``seed``); one seed's subsets are nested.
        heldout_dir: a folder of the same voice's held-out sentences, validated on in sorted
            order (``None``: validation is split from ``input_dir`` by ``val_fraction``).
    """

    def __init__(
        self,
        input_dir: str,
        cache_dir: str,
        sample_rate: int,
        hop_length: int,
        n_fft: int,
        version: str = "v2",
        encoder_path: str = "models/hubert_base.pt",
        f0_method: str = "rmvpe",
        rmvpe_path: str = "models/rmvpe.pt",
        fcpe_path: str = "models/fcpe_c_v001.pt",
        batch_size: int = 4,
        val_fraction: float = 0.1,
        seed: int = 1234,
        max_frames: int | None = 900,
        num_workers: int = 0,
        prepare_workers: int = 0,
        speaker_id: int | str = 0,
        device: str = "cpu",
        backend: str = "native",
        progress: bool = True,
        slicer: SlicerConfig | None = None,
        mel_numerics: str = "rvc_release",
        max_seconds: float | str | None = None,
        subset_seed: int | None = None,
        heldout_dir: str | None = None,
    ) -> None:
        super().__init__()
        # Under DDP global rank 0 alone fills the cache and the other ranks wait, then read the
        # finished entries (the per-entry locks would keep concurrent builders correct, but
        # every node would stand in line for every entry).
        self.prepare_data_per_node = False
        self.input_dir, self.cache_dir = Path(input_dir), Path(cache_dir)
        self.prep = PrepSettings(sr=sample_rate, slicer=slicer or SlicerConfig())
        self.features = FeatureSettings(
            version=version,
            encoder_path=str(encoder_path),
            f0_method=resolve_f0_method(f0_method, rmvpe_path, fcpe_path),
            rmvpe_path=str(rmvpe_path),
            fcpe_path=str(fcpe_path),
            device=device,
            backend=backend,
        )
        self.spec = SpectrogramSettings(
            hop_length=hop_length, n_fft=n_fft, numerics=named_mel_numerics(mel_numerics)
        )
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed
        self.max_frames, self.num_workers = max_frames, num_workers
        self.prepare_workers, self.speaker_id, self.progress = prepare_workers, speaker_id, progress
        self.max_seconds = budget_seconds(max_seconds)
        self.subset_seed = seed if subset_seed is None else subset_seed
        self.heldout_dir = None if heldout_dir is None else Path(heldout_dir)
        self.report: PrepareReport | None = None
        self.heldout_report: PrepareReport | None = None
        self.available_items: list[PreparedItem] = []  # training side before max_seconds
        self.speakers: list[str] = []  # top-level folders when speaker_id == "folder"
        self.train_items: list[PreparedItem] = []
        self.val_items: list[PreparedItem] = []

    def builder(self) -> FeatureCacheBuilder:
        return FeatureCacheBuilder(
            self.cache_dir,
            self.prep,
            self.features,
            num_workers=self.prepare_workers,
            progress=self.progress,
        )

    def prepare_data(self) -> None:
        self.report = self._build(self.input_dir, "data.input_dir")
        if self.heldout_dir is not None:  # same builder: same cache, settings and checks
            self.heldout_report = self._build(self.heldout_dir, "data.heldout_dir")

    def _build(self, folder: Path, key: str) -> PrepareReport:
        where = str(folder) if key == "data.input_dir" else f"{folder} ({key})"
        if key != "data.input_dir" and not folder.is_dir():  # find_audio_files names input_dir
            raise ConfigError(f"{where}: folder does not exist; set {key} to a folder or null")
        files = find_audio_files(folder)
        report = self.builder().build(folder, files)
        if not report.items:
            detail = "; ".join(r for _, r in report.skipped[:3])
            raise NoUsableAudioError(
                f"{where}: no usable audio in {len(files)} files"
                f"{' (' + detail + ')' if detail else ''}; add WAV/FLAC recordings of the voice, "
                f"at least a few seconds of speech each"
            )
        log.info("prepared %s: %s", key, report.summary())
        return report

    def setup(self, stage: str | None = None) -> None:
        if self.report is None or (self.heldout_dir is not None and self.heldout_report is None):
            self.prepare_data()  # e.g. another process ran prepare_data: cheap cached re-run
        assert self.report is not None
        if self.heldout_report is not None:
            _check_no_leak(self.report.items, self.heldout_report.items, self.heldout_dir)
            # Stable sort: a file's slices stay in time order; validation order is fixed.
            self.available_items = list(self.report.items)
            self.val_items = sorted(self.heldout_report.items, key=lambda i: i.source)
        else:
            self.available_items, self.val_items = split_by_source(
                self.report.items, self.val_fraction, self.seed
            )
        self.train_items = select_subset(self.available_items, self.max_seconds, self.subset_seed)
        log.info("%s", self._subset_line())
        if self.speaker_id == "folder":
            if self.heldout_report is not None:
                raise ConfigError(
                    f"data.heldout_dir={self.heldout_dir} holds one target voice's sentences; "
                    f"with data.speaker_id=folder (multi-speaker) leave it null"
                )
            self.speakers = sorted({_top_folder(i.source) for i in self.report.items})
            log.info(
                "speakers by folder: %s", ", ".join(f"{n}={s}" for n, s in enumerate(self.speakers))
            )
        elif not isinstance(self.speaker_id, int):
            raise ValueError(
                f"data.speaker_id={self.speaker_id!r}: use an integer (one voice) or 'folder' "
                f"(one speaker per top-level folder of {self.input_dir}, for multi-speaker pretraining)"
            )

    def _subset_line(self) -> str:
        used, avail = seconds(self.train_items), seconds(self.available_items)
        which = "all" if self.max_seconds is None else f"subset seed {self.subset_seed}"
        return (
            f"training on {used:.1f} s of {avail:.1f} s ({len(self.train_items)} of "
            f"{len(self.available_items)} slices, {which})"
        )

    def data_summary(self) -> dict:
        """What this run trains on, for ``run_info.json`` (``data``); call after ``setup``.

        ``seconds``: training audio used; ``available_seconds``: the training audio before
        ``max_seconds`` (without ``heldout_dir``, the training side of the split).
        """
        return {
            "input_dir": str(self.input_dir),
            "heldout_dir": None if self.heldout_dir is None else str(self.heldout_dir),
            "max_seconds": self.max_seconds,
            "subset_seed": self.subset_seed,
            "seconds": seconds(self.train_items),
            "available_seconds": seconds(self.available_items),
            "n_slices": len(self.train_items),
            "n_sources": len({i.source for i in self.train_items}),
        }

    def speaker_ids(self, items: list[PreparedItem]) -> int | list[int]:
        """The ``sid`` of each item: ``speaker_id``, or the index of its top-level folder."""
        if self.speaker_id != "folder":
            return int(self.speaker_id)
        return [self.speakers.index(_top_folder(i.source)) for i in items]

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches that a run resumed mid-epoch continues exactly (order, crops):
        see :mod:`rvc_lora.training.determinism`."""
        ds = VoiceDataset(
            self.train_items,
            self.spec,
            self.speaker_ids(self.train_items),
            self.max_frames,
            seed=self.seed,
            sample_rate=self.prep.sr,
        )
        trainer = self.trainer  # under DDP each rank draws its share of the same order
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return ResumableLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), self.seed, num_replicas=world, rank=rank),
            drop_last=False,
            collate_fn=collate_voice,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        ds = VoiceDataset(
            self.val_items,
            self.spec,
            self.speaker_ids(self.val_items),
            self.max_frames,
            random_crop=False,
            sample_rate=self.prep.sr,
        )
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_voice,
            num_workers=self.num_workers,
        )


def _check_no_leak(
    train: list[PreparedItem], heldout: list[PreparedItem], heldout_dir: Path | None
) -> None:
    """A held-out file with the same bytes as a training file would score training audio.

    Slice ids start with the source file's content hash (``<sha256[:16]>-<prep key>-<n>``),
    so comparing them costs nothing: no audio is read again.
    """
    train_files = {_file_key(i): i.source for i in train}
    for item in heldout:
        twin = train_files.get(_file_key(item))
        if twin is not None:
            raise ConfigError(
                f"{heldout_dir}/{item.source} (data.heldout_dir) is the same audio as {twin} in "
                f"data.input_dir: validation would score training audio; remove it from one folder"
            )


def _file_key(item: PreparedItem) -> str:
    return item.item_id.rsplit("-", 1)[0]


def _top_folder(source: str) -> str:
    """First folder of a path relative to the input folder ("" for files at its top)."""
    parts = Path(source).parts
    return parts[0] if len(parts) > 1 else ""
