"""Synthetic speech-like audio: voiced phrases separated by pauses (tests and the interim demo)."""

from __future__ import annotations

import numpy as np


def voiced(sr: int, seconds: float, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato and a syllable-rate envelope, peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8) if k * f0 < sr / 2)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, np.pi)) ** 2
    y = y * envelope + 0.01 * rng.standard_normal(len(t))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def phrases(
    sr: int, n: int = 3, seconds: float = 2.0, pause: float = 0.8, seed: int = 0, f0: float = 150.0
) -> np.ndarray:
    """``n`` voiced phrases with digital-silence pauses before, between and after."""
    gap = np.zeros(int(sr * pause), dtype=np.float32)
    parts = [gap]
    for i in range(n):
        parts += [voiced(sr, seconds, f0 * (1 + 0.1 * i), seed + i), gap]
    return np.concatenate(parts)
