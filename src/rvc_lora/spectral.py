"""Spectrograms with RVC's numerics (RVC_FACTS.md §4), shared by data, training and metrics.

Linear magnitude: reflect-pad ``(n_fft - hop) / 2`` on both sides, ``torch.stft`` with
``center=False`` and a periodic Hann window of ``win_length``, magnitude
``sqrt(re² + im² + spec_eps)``. Mel: librosa's Slaney filters, then ``log(clamp(x, mel_floor))``.
Always computed in float32, also under autocast, because half-precision STFTs lose the quiet bins
the L1 mel loss looks at.

The two constants are a named choice (``features.mel_numerics``, :data:`MEL_NUMERICS`):
``rvc_release`` (1e-6, 1e-5) is what RVC's training code held from its first release through
2025, so the official pretrained bases (v1 2023-04, v2 2023-05/06; RVC's 2026-07 changelog:
"the base model remains unchanged") were trained with it; ``rvc_main`` (2e-7, 2e-6) is RVC's
training code since its 2026-07 import (``train/mel_processing.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F

from rvc_lora.utils.errors import ConfigError


@dataclass(frozen=True)
class MelNumerics:
    """The constants that decide how quiet bins look to the mel loss and the posterior encoder.

    Attributes:
        spec_eps: added to ``re² + im²`` under the magnitude's square root.
        mel_floor: the mel is clamped to at least this before the log.
    """

    spec_eps: float
    mel_floor: float


RVC_RELEASE = MelNumerics(spec_eps=1e-6, mel_floor=1e-5)
RVC_MAIN = MelNumerics(spec_eps=2e-7, mel_floor=2e-6)
MEL_NUMERICS: dict[str, MelNumerics] = {"rvc_release": RVC_RELEASE, "rvc_main": RVC_MAIN}


def mel_numerics(name: str) -> MelNumerics:
    """The constants of a named choice (``rvc_release`` or ``rvc_main``)."""
    try:
        return MEL_NUMERICS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"features.mel_numerics={name!r} unknown; choose one of {sorted(MEL_NUMERICS)} "
            "(rvc_release: the constants RVC's official pretrained bases were trained with)"
        ) from None


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
    y: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    numerics: MelNumerics = RVC_RELEASE,
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
        return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + numerics.spec_eps)


def spec_to_mel(
    spec: torch.Tensor,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    numerics: MelNumerics = RVC_RELEASE,
) -> torch.Tensor:
    """Linear magnitude ``[B, F, T]`` -> log-mel ``[B, n_mels, T]`` (RVC's ``spec_to_mel_torch``)."""
    with torch.autocast(device_type=spec.device.type, enabled=False):
        basis = mel_basis(sr, n_fft, n_mels, fmin, fmax, device=spec.device)
        mel = torch.matmul(basis, spec.float())
        return torch.log(torch.clamp(mel, min=numerics.mel_floor))


def mel_spectrogram(
    y: torch.Tensor,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    win_length: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    numerics: MelNumerics = RVC_RELEASE,
) -> torch.Tensor:
    """Waveform ``[B, N]``/``[B, 1, N]`` -> log-mel ``[B, n_mels, N // hop]`` (RVC's numerics)."""
    spec = linear_spectrogram(y, n_fft, hop_length, win_length, numerics)
    return spec_to_mel(spec, sr, n_fft, n_mels, fmin, fmax, numerics)
