"""Input checks and resampling shared by the metrics: every metric takes 1-D waveforms."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import torch

from rvc_lora.audio import resample

PESQ_SR = 16000  # PESQ wide-band, resemblyzer and RVC's F0 extractors all work at 16 kHz

Waveform = np.ndarray | torch.Tensor


def as_mono(wav: Waveform, name: str = "wav") -> np.ndarray:
    """A 1-D finite float64 numpy copy of ``wav`` (numpy array or tensor, ``[N]``).

    ``[1, N]`` is accepted as mono; anything else with more than one axis is refused.
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().double().numpy()
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a mono waveform [N], got shape {list(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{name}: waveform has no samples")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: waveform contains NaN or infinite samples")
    return x


def check_sr(sr: int) -> int:
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    return int(sr)


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """``x`` resampled to 16 kHz (soxr HQ), float64."""
    if sr == PESQ_SR:
        return x
    return resample(x.astype(np.float32), sr, PESQ_SR).astype(np.float64)


def stft_params(sr: int) -> tuple[int, int]:
    """``(n_fft, hop)`` for spectral metrics: a 10 ms hop and a window of at least 40 ms.

    16 kHz -> (1024, 160); 22.05/24 kHz -> (1024, 220/240); 32 kHz -> (2048, 320);
    40 kHz -> (2048, 400) and 48 kHz -> (2048, 480), RVC's own settings for those rates.
    """
    hop = sr // 100
    n_fft = 1 << int(np.ceil(np.log2(4 * hop)))
    return n_fft, hop


def import_pyworld() -> ModuleType:
    with warnings.catch_warnings():
        # pyworld 0.3.x imports pkg_resources at import time, which warns on setuptools>=70.
        warnings.simplefilter("ignore", UserWarning)
        import pyworld
    return pyworld
