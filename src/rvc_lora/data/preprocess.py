"""Raw recording -> normalised slices at the model's rate and at 16 kHz (RVC_FACTS.md §8)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rvc_lora.audio import AudioError, load_audio, resample
from rvc_lora.data.audio import chunk_spans, highpass, normalize_chunk
from rvc_lora.data.slicer import SlicerConfig, slice_audio

CONTENT_SR = 16000  # HuBERT and every F0 method run at 16 kHz
# Below this peak a file holds dither or hiss, not a recording of a voice (16-bit dither is
# about -90 dBFS; clean speech recorded far too quietly still peaks near -60 dBFS).
MIN_PEAK_DBFS = -70.0


@dataclass(frozen=True)
class PrepSettings:
    """Everything that changes the slices of a file (part of their cache key)."""

    sr: int
    slicer: SlicerConfig = field(default_factory=SlicerConfig)
    chunk_seconds: float = 3.7
    overlap_seconds: float = 0.3
    # HuBERT needs 400 samples at 16 kHz for one frame, and RVC's sampler drops clips under
    # about 0.75 s; half a second keeps short phrases while giving the model a few frames.
    min_chunk_seconds: float = 0.5
    highpass: bool = True
    # "peak": the slicer threshold is measured below the file's peak, so a quiet but clean
    # recording slices like a loud one; "full_scale": below 0 dBFS, as RVC (the same for a file
    # peaking at 0 dBFS). Part of the cache key, so slices of the other kind are rebuilt.
    slicer_level: str = "peak"

    def __post_init__(self) -> None:
        if self.slicer_level not in ("peak", "full_scale"):
            raise ValueError(f"slicer_level={self.slicer_level!r}: use 'peak' or 'full_scale'")


@dataclass
class Slice:
    """One training item: the same audio at the model rate and at 16 kHz."""

    wav: np.ndarray  # [N] float32 at PrepSettings.sr
    wav16k: np.ndarray  # [N * 16000 / sr] float32
    start: int = 0  # where the slice lies in the recording: samples at PrepSettings.sr
    end: int = 0
    segment: int = 0  # which stretch between long silences it was cut from (chunks overlap)


def slice_recording(path, prep: PrepSettings) -> list[Slice]:
    """Load, filter, slice on silence, chunk and normalise one recording.

    Raises:
        AudioError: unreadable file, or nothing usable in it (the message says why).
    """
    y, sr = load_audio(path, prep.sr)
    duration = len(y) / sr
    if duration < prep.min_chunk_seconds:
        raise AudioError(
            f"{path}: too short ({duration:.2f} s; need at least "
            f"{prep.min_chunk_seconds} s of speech)"
        )
    if prep.highpass:
        y = highpass(y, sr)
    peak = float(np.abs(y).max())
    if peak < 10 ** (MIN_PEAK_DBFS / 20):
        level = f"peak {20 * np.log10(peak):.1f} dBFS" if peak > 0 else "digital silence"
        raise AudioError(
            f"{path}: only silence ({level}; a voice recording peaks above {MIN_PEAK_DBFS:.0f} "
            f"dBFS): check the file, or record with more input gain"
        )
    reference = peak if prep.slicer_level == "peak" else 1.0
    spans = slice_audio(y / reference, sr, prep.slicer)
    if not spans:
        below = "its peak" if prep.slicer_level == "peak" else "full scale"
        raise AudioError(
            f"{path}: only silence (nothing above {prep.slicer.threshold_db} dB below {below})"
        )
    slices = []
    min_len = int(prep.min_chunk_seconds * sr)
    for segment, (start, end) in enumerate(spans):
        part = y[start:end]
        for a, b in chunk_spans(len(part), sr, prep.chunk_seconds, prep.overlap_seconds):
            if b - a < min_len:
                continue
            chunk = normalize_chunk(part[a:b])
            if chunk is None:
                continue
            wav16k = resample(chunk, sr, CONTENT_SR)
            slices.append(Slice(chunk, wav16k, start + a, start + b, segment))
    if not slices:
        raise AudioError(
            f"{path}: no speech segment of at least {prep.min_chunk_seconds} s "
            f"after slicing on silence"
        )
    return slices
