"""RVC's preprocessing of loaded audio: high-pass, chunking, normalisation (RVC_FACTS.md §8).

Loading and resampling live in :mod:`rvc_lora.audio`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import signal

HIGHPASS_ORDER, HIGHPASS_HZ = 5, 48
NORM_MAX, NORM_ALPHA, NORM_SKIP_ABOVE = 0.9, 0.75, 2.5


def highpass(y: np.ndarray, sr: int) -> np.ndarray:
    """RVC's 48 Hz, order-5 Butterworth high-pass, causal (``lfilter``: no pre-ringing)."""
    b, a = signal.butter(N=HIGHPASS_ORDER, Wn=HIGHPASS_HZ, btype="high", fs=sr)
    return signal.lfilter(b, a, y).astype(np.float32)


def normalize_chunk(y: np.ndarray) -> np.ndarray | None:
    """RVC's loudness normalisation; ``None`` for a chunk RVC skips (peak above 2.5)."""
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak > NORM_SKIP_ABOVE or peak == 0.0:
        return None
    return (y / peak * (NORM_MAX * NORM_ALPHA) + (1 - NORM_ALPHA) * y).astype(np.float32)


def chunk_spans(
    n: int, sr: int, per: float = 3.7, overlap: float = 0.3
) -> Iterator[tuple[int, int]]:
    """RVC's chunking of a slice: ``per``-second windows every ``per - overlap`` seconds while more
    than ``per + overlap`` seconds remain, then the remainder."""
    start = 0
    step, length, limit = int(sr * (per - overlap)), int(sr * per), int(sr * (per + overlap))
    while n - start > limit:
        yield start, start + length
        start += step
    yield start, n
