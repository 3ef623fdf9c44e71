"""Raw recording -> normalised slices at the model's rate and at 16 kHz (RVC_FACTS.md §8)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rvc_lora.audio import AudioError, load_audio, resample
from rvc_lora.data.audio import chunk_spans, highpass, normalize_chunk
from rvc_lora.data.slicer import SlicerConfig, slice_audio

CONTENT_SR = 16000  # HuBERT and every F0 method run at 16 kHz


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


@dataclass
class Slice:
    """One training item: the same audio at the model rate and at 16 kHz."""

    wav: np.ndarray  # [N] float32 at PrepSettings.sr
    wav16k: np.ndarray  # [N * 16000 / sr] float32


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
    spans = slice_audio(y, sr, prep.slicer)
    if not spans:
        raise AudioError(f"{path}: only silence (nothing above {prep.slicer.threshold_db} dB)")
    slices = []
    min_len = int(prep.min_chunk_seconds * sr)
    for start, end in spans:
        part = y[start:end]
        for a, b in chunk_spans(len(part), sr, prep.chunk_seconds, prep.overlap_seconds):
            if b - a < min_len:
                continue
            chunk = normalize_chunk(part[a:b])
            if chunk is None:
                continue
            slices.append(Slice(wav=chunk, wav16k=resample(chunk, sr, CONTENT_SR)))
    if not slices:
        raise AudioError(
            f"{path}: no speech segment of at least {prep.min_chunk_seconds} s "
            f"after slicing on silence"
        )
    return slices
