"""F0 accuracy of a converted utterance against a reference: RMSE in cents, log-F0 correlation
and the voiced/unvoiced decision error, on RVC's own F0 tracks (16 kHz, 10 ms frames)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.fft
import torch

from rvc_lora.features.f0 import compute_f0
from rvc_lora.metrics.audio import PESQ_SR, Waveform, as_mono, check_sr, stft_params, to_16k
from rvc_lora.metrics.base import PairMean
from rvc_lora.metrics.dtw import dtw_align
from rvc_lora.spectral import mel_spectrogram

F0_KEYS = ("f0_rmse_cents", "f0_corr", "vuv_error")
ALIGN_MFCC = (
    13  # cepstral coefficients 1..13 of the log-mel: the envelope, smoothed past the harmonics
)


def f0_scores(f0_converted: np.ndarray, f0_reference: np.ndarray) -> dict[str, float]:
    """The three F0 metrics on two already aligned tracks ``[T]`` in Hz (0 = unvoiced).

    Returns:
        ``f0_rmse_cents``: RMS of ``1200 log2(f_conv / f_ref)`` over frames voiced in both;
        ``f0_corr``: Pearson correlation of log F0 over the same frames;
        ``vuv_error``: fraction of all frames whose voiced/unvoiced decisions differ.
        RMSE is NaN without a frame voiced in both, the correlation also with fewer than two
        such frames or a constant track (its correlation is undefined).
    """
    fc = np.asarray(f0_converted, dtype=np.float64)
    fr = np.asarray(f0_reference, dtype=np.float64)
    if fc.shape != fr.shape or fc.ndim != 1:
        raise ValueError(
            f"aligned F0 tracks must be [T] each, got {list(fc.shape)}, {list(fr.shape)}"
        )
    if len(fc) == 0:
        raise ValueError("aligned F0 tracks are empty")
    vc, vr = fc > 0, fr > 0
    both = vc & vr
    rmse = corr = math.nan
    if both.any():
        log_c, log_r = np.log2(fc[both]), np.log2(fr[both])
        rmse = float(np.sqrt(np.mean((1200.0 * (log_c - log_r)) ** 2)))
        if both.sum() >= 2 and np.std(log_c) > 0 and np.std(log_r) > 0:
            corr = float(np.corrcoef(log_c, log_r)[0, 1])
    return {"f0_rmse_cents": rmse, "f0_corr": corr, "vuv_error": float(np.mean(vc != vr))}


def alignment_features(wav16k: np.ndarray) -> np.ndarray:
    """MFCC-like frames ``[N // 160, 13]`` (16 kHz, 10 ms hop: the F0 frame grid) for DTW."""
    n_fft, hop = stft_params(PESQ_SR)
    y = torch.from_numpy(wav16k.astype(np.float32))[None]  # [1, N]
    logmel = mel_spectrogram(y, PESQ_SR, n_fft, hop, n_mels=80)[0].numpy()  # [80, T]
    cep = scipy.fft.dct(logmel, type=2, norm="ortho", axis=0)  # [80, T]
    return cep[1 : ALIGN_MFCC + 1].T.astype(np.float64)  # [T, 13]


def aligned_frames(
    wav16k_converted: np.ndarray, wav16k_reference: np.ndarray, align: bool
) -> np.ndarray:
    """Frame pairs ``[L, 2]`` (converted index, reference index) on the 10 ms grid.

    ``align=True`` aligns by DTW; ``False`` pairs frames one to one over the shorter utterance
    (only for pairs known to share a time axis).
    """
    if not isinstance(align, bool):
        # The former ``None`` ("DTW only when the frame counts differ") scored equal-length but
        # unaligned pairs frame by frame; refuse it rather than guess.
        raise TypeError(f"align must be True (DTW) or False (frame by frame), got {align!r}")
    n_c, n_r = len(wav16k_converted) // 160, len(wav16k_reference) // 160
    if min(n_c, n_r) == 0:
        raise ValueError("F0 metrics need at least 10 ms of audio in both signals")
    if not align:
        n = min(n_c, n_r)
        return np.stack([np.arange(n), np.arange(n)], axis=1)
    return dtw_align(alignment_features(wav16k_converted), alignment_features(wav16k_reference))


def f0_metrics(
    converted: Waveform,
    reference: Waveform,
    sr: int,
    *,
    method: str = "harvest",
    align: bool = True,
    f0_min: float = 50.0,
    f0_max: float = 1100.0,
    f0_models: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """F0 RMSE (cents), log-F0 correlation and V/UV error of ``converted`` against ``reference``.

    Both are resampled to 16 kHz and tracked by :func:`rvc_lora.features.f0.compute_f0`
    (``method``: ``harvest`` (default, most accurate), ``dio``, ``pm``, or the networks
    ``fcpe`` / ``rmvpe`` with their model in ``f0_models``; 10 ms frames), then paired along a
    DTW path on MFCCs, or frame by frame (see :func:`aligned_frames`).

    Args:
        converted, reference: ``[N]`` / ``[M]`` waveforms at ``sr`` (numpy or torch).
        align: DTW (default); ``False`` only for pairs known to share a time axis, whatever
            their lengths.
        f0_models: the loaded network of a network method, as :func:`compute_f0` keywords
            (``{"fcpe": model}``; :func:`rvc_lora.features.f0.network_f0_models` loads it).
    Returns:
        ``{"f0_rmse_cents", "f0_corr", "vuv_error"}`` as in :func:`f0_scores`.
    """
    sr = check_sr(sr)
    conv = to_16k(as_mono(converted, "converted"), sr)
    ref = to_16k(as_mono(reference, "reference"), sr)
    pairs = aligned_frames(conv, ref, align)
    opts = dict(f0_min=f0_min, f0_max=f0_max, **(f0_models or {}))
    f0_conv = compute_f0(conv, method, **opts)
    f0_ref = compute_f0(ref, method, **opts)
    return f0_scores(f0_conv[pairs[:, 0]], f0_ref[pairs[:, 1]])


def f0_rmse_cents(converted: Waveform, reference: Waveform, sr: int, **kwargs: object) -> float:
    """``f0_metrics(...)["f0_rmse_cents"]``: use :func:`f0_metrics` to get all three at once."""
    return f0_metrics(converted, reference, sr, **kwargs)["f0_rmse_cents"]


def f0_correlation(converted: Waveform, reference: Waveform, sr: int, **kwargs: object) -> float:
    """``f0_metrics(...)["f0_corr"]``: Pearson correlation of log F0 on frames voiced in both."""
    return f0_metrics(converted, reference, sr, **kwargs)["f0_corr"]


def vuv_error_rate(converted: Waveform, reference: Waveform, sr: int, **kwargs: object) -> float:
    """``f0_metrics(...)["vuv_error"]``: fraction of aligned frames with differing voicing."""
    return f0_metrics(converted, reference, sr, **kwargs)["vuv_error"]


class F0Error(PairMean):
    """Per-utterance F0 metrics averaged over utterances; ``compute()`` returns a dict with
    :data:`F0_KEYS` (each key averages only the utterances where it is defined).

    Args:
        sr: sample rate of every pair passed to ``update(converted, reference)``.
        **kwargs: options of :func:`f0_metrics` (``method``, ``align``, ...).
    """

    keys = F0_KEYS
    score = staticmethod(f0_metrics)
