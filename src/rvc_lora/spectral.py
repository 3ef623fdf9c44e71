"""Spectrograms with RVC's numerics (RVC_FACTS.md §4), shared by data, training and metrics.

Linear magnitude: reflect-pad ``(n_fft - hop) / 2`` on both sides, ``torch.stft`` with
``center=False`` and a periodic Hann window of ``win_length``, magnitude ``sqrt(re² + im² + 1e-6)``.
Mel: librosa's Slaney filters, then ``log(clamp(x, 1e-5))``. Always computed in float32, also
under autocast, because half-precision STFTs lose the quiet bins the L1 mel loss looks at.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=32)
def _mel_basis_np(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool
) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk)


def mel_basis(
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` (librosa; Slaney unless ``htk``)."""
    basis = _mel_basis_np(int(sr), int(n_fft), int(n_mels), float(fmin), fmax, bool(htk))
    return torch.from_numpy(basis).to(device=device, dtype=torch.float32)


def _hann(win_length: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, device=device, dtype=torch.float32)


def linear_spectrogram(
    y: torch.Tensor, n_fft: int, hop_length: int, win_length: int | None = None
) -> torch.Tensor:
    """Magnitude spectrogram as RVC's ``spectrogram_torch``.

    Args:
        y: waveform ``[B, N]`` or ``[B, 1, N]`` in [-1, 1].
    Returns:
        ``[B, n_fft // 2 + 1, N // hop_length]`` float32.
    """
    win_length = win_length or n_fft
    if y.dim() == 3:
        y = y.squeeze(1)
    with torch.autocast(device_type=y.device.type, enabled=False):
        y = y.float()
        pad = (n_fft - hop_length) // 2
        y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            y,
            n_fft,
            hop_length=hop_length,
            win_length=win_length,
            window=_hann(win_length, y.device),
            center=False,
            return_complex=True,
        )
        return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-6)


def spec_to_mel(
    spec: torch.Tensor,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """Linear magnitude ``[B, F, T]`` -> log-mel ``[B, n_mels, T]`` (RVC's ``spec_to_mel_torch``)."""
    with torch.autocast(device_type=spec.device.type, enabled=False):
        basis = mel_basis(sr, n_fft, n_mels, fmin, fmax, device=spec.device)
        mel = torch.matmul(basis, spec.float())
        return torch.log(torch.clamp(mel, min=1e-5))


def mel_spectrogram(
    y: torch.Tensor,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    win_length: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """Waveform ``[B, N]``/``[B, 1, N]`` -> log-mel ``[B, n_mels, N // hop]`` (RVC's numerics)."""
    spec = linear_spectrogram(y, n_fft, hop_length, win_length)
    return spec_to_mel(spec, sr, n_fft, n_mels, fmin, fmax)
