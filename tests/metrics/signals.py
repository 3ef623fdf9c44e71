"""Test audio for the metrics: harmonic signals with a known F0 and the shipped demo corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def demo(voice: str, sentence: int) -> np.ndarray:
    """Sentence ``sNN`` of a demo voice (16 kHz float64): ``slt`` is the target voice."""
    folder = DEMO / "target" / "slt" if voice == "slt" else DEMO / "base" / voice
    wav, sr = sf.read(folder / f"s{sentence:02d}.flac", dtype="float64")
    assert sr == SR, f"demo corpus is 16 kHz, {folder} is {sr}"
    return wav


def glide(seconds: float, cents: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    """A voiced F0 contour in Hz per sample: 140 Hz rising half an octave with a 5 Hz vibrato,
    shifted by ``cents`` and played ``stretch`` times slower."""
    t = np.arange(int(SR * seconds * stretch)) / (SR * stretch)
    return 140.0 * 2 ** (0.5 * t / seconds + 0.05 * np.sin(2 * np.pi * 5 * t) + cents / 1200)


def formant_track(seconds: float, stretch: float = 1.0) -> np.ndarray:
    """First-formant frequency per sample, moving between 300 and 900 Hz (a vowel sequence)."""
    t = np.arange(int(SR * seconds * stretch)) / (SR * stretch)
    return 600.0 + 300.0 * np.sin(2 * np.pi * t / 1.1)


def harmonic(f0: np.ndarray, formant: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sum of harmonics of ``f0`` (Hz per sample) shaped by a three-formant envelope whose first
    formant follows ``formant`` (the envelope depends on frequency, not on F0), plus -40 dB noise
    (WORLD's harvest needs a noise floor; see tests/features/test_f0.py)."""
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = np.zeros_like(f0)
    for h in range(1, 60):
        fh = h * f0
        amp = (
            np.exp(-(((fh - formant) / 300) ** 2))
            + 0.6 * np.exp(-(((fh - 2 * formant - 300) / 300) ** 2))
            + 0.3 * np.exp(-(((fh - 2500) / 500) ** 2))
            + 0.02
        )
        y += np.where(fh < SR / 2 - 200, amp, 0.0) * np.sin(h * phase)
    y = 0.3 * y / np.abs(y).max()
    return y + 0.003 * np.random.default_rng(seed).standard_normal(len(y))


def vowel_glide(seconds: float = 2.0, cents: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    return harmonic(glide(seconds, cents, stretch), formant_track(seconds, stretch))
