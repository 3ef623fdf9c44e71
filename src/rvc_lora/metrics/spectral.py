"""Time-aligned spectral distances: spectral convergence and log-mel L1.

Both compare frame ``t`` with frame ``t``, so they only mean something for signals on the same
time axis (a resynthesis, a conversion of the reference itself); the longer signal is trimmed
to the shorter. STFT settings follow the sample rate (:func:`rvc_lora.metrics.audio.stft_params`)
and the numerics are the project's own (:mod:`rvc_lora.spectral`).
"""

from __future__ import annotations

import numpy as np
import torch

from rvc_lora.metrics.audio import Waveform, as_mono, check_sr, stft_params
from rvc_lora.metrics.base import PairMean
from rvc_lora.spectral import linear_spectrogram, spec_to_mel

N_MELS = 80


def _trimmed_batch(
    converted: Waveform, reference: Waveform, sr: int
) -> tuple[torch.Tensor, int, int]:
    """``[2, N]`` float32 (converted, reference) trimmed to the shorter length, n_fft, hop."""
    conv = as_mono(converted, "converted")
    ref = as_mono(reference, "reference")
    n = min(len(conv), len(ref))
    n_fft, hop = stft_params(sr)
    if n < n_fft:
        raise ValueError(
            f"spectral metrics need at least {n_fft} samples ({n_fft / sr * 1000:.0f} ms) at "
            f"{sr} Hz, got {n}"
        )
    y = torch.from_numpy(np.stack([conv[:n], ref[:n]]).astype(np.float32))  # [2, N]
    return y, n_fft, hop


def _magnitudes(converted: Waveform, reference: Waveform, sr: int) -> tuple[torch.Tensor, int]:
    y, n_fft, hop = _trimmed_batch(converted, reference, check_sr(sr))
    return linear_spectrogram(y, n_fft, hop).double(), n_fft  # [2, F, T]


def spectral_convergence(converted: Waveform, reference: Waveform, sr: int) -> float:
    """``|| |S_ref| - |S_conv| ||_F / || |S_ref| ||_F`` on STFT magnitudes (0 when identical).

    Args:
        converted, reference: ``[N]`` / ``[M]`` waveforms at ``sr``; trimmed to ``min(N, M)``.
    """
    mag, _ = _magnitudes(converted, reference, sr)
    return float(torch.linalg.norm(mag[1] - mag[0]) / torch.linalg.norm(mag[1]))


def log_mel_l1(converted: Waveform, reference: Waveform, sr: int, *, n_mels: int = N_MELS) -> float:
    """Mean absolute difference of natural-log mel spectrograms (Slaney mel, floor 1e-5).

    Args:
        converted, reference: ``[N]`` / ``[M]`` waveforms at ``sr``; trimmed to ``min(N, M)``.
        n_mels: mel bands from 0 Hz to ``sr / 2``.
    """
    mag, n_fft = _magnitudes(converted, reference, sr)
    mel = spec_to_mel(mag.float(), sr, n_fft, n_mels).double()  # [2, n_mels, T]
    return float((mel[0] - mel[1]).abs().mean())


class SpectralConvergence(PairMean):
    """Mean spectral convergence over utterances; ``update(converted, reference)``."""

    keys = ("spectral_convergence",)
    higher_is_better = False
    score = staticmethod(spectral_convergence)


class LogMelL1(PairMean):
    """Mean log-mel L1 over utterances; ``update(converted, reference)``."""

    keys = ("log_mel_l1",)
    higher_is_better = False
    score = staticmethod(log_mel_l1)

    def __init__(self, sr: int, n_mels: int = N_MELS) -> None:
        super().__init__(sr, n_mels=n_mels)
        self.n_mels = n_mels
