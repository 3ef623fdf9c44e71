"""Pitch shift and RVC's coarse pitch quantisation (RVC_FACTS.md §7.2).

The synthesizer's ``emb_pitch`` takes an integer 1..255 per frame, made from the Hz track on a
mel scale between 50 and 1100 Hz. Unvoiced frames (f0 = 0) map to 1; index 0 is never used.
Both functions accept numpy arrays and torch tensors and return the same kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import torch

F0_MIN = 50.0
F0_MAX = 1100.0
F0_BINS = 256  # RVC's f0_bin: coarse values live in 1..F0_BINS-1


def hz_to_mel(f0_hz: np.ndarray) -> np.ndarray:
    """RVC's pitch mel scale, ``1127 * ln(1 + f / 700)`` (float64)."""
    # Written as log(1 + x) rather than log1p: the coarse value must round exactly as RVC's
    # numpy code does, and log1p can differ by an ulp right at a .5 boundary.
    return 1127.0 * np.log(1.0 + np.asarray(f0_hz, dtype=np.float64) / 700.0)


# Same numpy expression as RVC (not math.log) so the constants are bit-identical.
MEL_MIN = float(1127 * np.log(1 + F0_MIN / 700))  # 77.755…
MEL_MAX = float(1127 * np.log(1 + F0_MAX / 700))  # 1064.408…

T = TypeVar("T", np.ndarray, torch.Tensor)


def _coarse_np(f0_hz: np.ndarray) -> np.ndarray:
    f0 = np.asarray(f0_hz, dtype=np.float64)
    # NaN or negative Hz is not a pitch; treat it as unvoiced instead of letting log() make NaN.
    f0 = np.where(np.isfinite(f0) & (f0 > 0), f0, 0.0)
    mel = hz_to_mel(f0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - MEL_MIN) * (F0_BINS - 2) / (MEL_MAX - MEL_MIN) + 1
    mel[mel <= 1] = 1
    mel[mel > F0_BINS - 1] = F0_BINS - 1
    return np.rint(mel).astype(np.int64)  # rint: round half to even, as RVC


def coarse_pitch(f0_hz: T) -> T:
    """Quantise an F0 track in Hz to RVC's coarse pitch indices.

    Args:
        f0_hz: Hz, any shape (usually ``[T]`` or ``[B, T]``); 0 marks unvoiced frames.
    Returns:
        int64 of the same shape and kind (numpy or torch, same device), values in 1..255.
    """
    if isinstance(f0_hz, torch.Tensor):
        # Through numpy in float64 so that the torch and numpy paths round identically (torch's
        # log may differ from numpy's by an ulp, which flips exact .5 cases).
        out = _coarse_np(f0_hz.detach().to("cpu", torch.float64).numpy())
        return torch.from_numpy(out).to(f0_hz.device)
    return _coarse_np(f0_hz)


def shift_pitch(f0_hz: T, semitones: float) -> T:
    """Transpose an F0 track: ``f0 * 2 ** (semitones / 12)``; unvoiced zeros stay zero.

    Args:
        f0_hz: Hz, any shape, numpy or torch.
        semitones: positive raises the pitch (+12 = one octave up).
    Returns:
        A new array/tensor of the same kind and dtype.
    """
    factor = 2.0 ** (float(semitones) / 12.0)
    if isinstance(f0_hz, torch.Tensor):
        return f0_hz * factor
    arr = np.asarray(f0_hz)
    return (arr * factor).astype(arr.dtype if arr.dtype.kind == "f" else np.float64, copy=False)


def voiced_median_hz(f0: np.ndarray | Iterable[np.ndarray]) -> float | None:
    """Median of the voiced frames (F0 > 0, finite) of one track ``[T]`` or several, in Hz.

    Returns:
        The median, or None when no frame is voiced.
    """
    tracks = [f0] if isinstance(f0, np.ndarray) else list(f0)
    voiced = [t[np.isfinite(t) & (t > 0)] for t in (np.asarray(x, np.float64) for x in tracks)]
    frames = np.concatenate(voiced) if voiced else np.zeros(0)
    return float(np.median(frames)) if frames.size else None
