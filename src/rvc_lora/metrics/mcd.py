"""Mel-cepstral distortion (dB) between a converted and a reference utterance, DTW-aligned."""

from __future__ import annotations

import math

import numpy as np

from rvc_lora.metrics.audio import Waveform, as_mono, check_sr
from rvc_lora.metrics.base import PairMean
from rvc_lora.metrics.dtw import dtw_align
from rvc_lora.metrics.mcep import FRAME_PERIOD_MS, MCEP_ORDER, world_mcep

# dB per natural-log cepstral unit, times sqrt(2) for the two sides of the symmetric cepstrum.
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
# Reference frames more than this far below the loudest reference frame count as silence.
SILENCE_DB = 40.0


def mcd_from_mcep(
    mcep_converted: np.ndarray,
    mcep_reference: np.ndarray,
    *,
    reference_power_db: np.ndarray | None = None,
    align: bool = True,
    silence_db: float = SILENCE_DB,
) -> float:
    """MCD in dB between mel-cepstra ``[Tc, D+1]`` and ``[Tr, D+1]``; ``c0`` (gain) is ignored.

    ``(10 / ln 10) * sqrt(2 * sum_{d>=1} (c_d - c'_d)^2)`` averaged over aligned frame pairs: the
    DTW path on the Euclidean distance of ``c1..cD`` (``align=True``), or frame by frame over
    the shorter length. With ``reference_power_db`` ``[Tr]``, pairs whose reference frame lies
    more than ``silence_db`` below the loudest reference frame are left out of the mean.
    """
    conv, ref = mcep_converted[:, 1:], mcep_reference[:, 1:]
    if align:
        path = dtw_align(ref, conv)
    else:
        n = min(len(ref), len(conv))
        path = np.stack([np.arange(n), np.arange(n)], axis=1)
    if reference_power_db is not None:
        speech = reference_power_db > reference_power_db.max() - silence_db
        path = path[speech[path[:, 0]]]
    diff = ref[path[:, 0]] - conv[path[:, 1]]
    return float(np.mean(MCD_SCALE * np.sqrt((diff * diff).sum(axis=1))))


def mel_cepstral_distortion(
    converted: Waveform,
    reference: Waveform,
    sr: int,
    *,
    order: int = MCEP_ORDER,
    alpha: float | None = None,
    f0_method: str = "dio",
    frame_period: float = FRAME_PERIOD_MS,
    align: bool = True,
    silence_db: float = SILENCE_DB,
) -> float:
    """Mel-cepstral distortion in dB (lower is better; 0 for identical signals).

    Both signals get WORLD analysis (``f0_method`` + stonemask for F0, cheaptrick for the
    envelope; dio by default because the envelope hardly depends on F0 details and dio is 20x
    faster than harvest) every ``frame_period`` ms, then an order-``order`` mel-cepstrum with
    the all-pass constant of ``sr`` (:func:`rvc_lora.metrics.mcep.alpha_for_sr`). Frames are
    DTW-aligned, so the utterances may differ in length and timing. Only reference frames within
    ``silence_db`` dB of the loudest reference frame (envelope power) enter the mean: this
    energy criterion keeps unvoiced consonants and drops pauses and leading/trailing silence.

    Args:
        converted, reference: ``[N]`` / ``[M]`` waveforms at ``sr`` (numpy or torch).
        sr: sample rate in Hz (>= 8 kHz); sets ``alpha`` unless given
            (:func:`rvc_lora.metrics.mcep.alpha_for_sr`).
    Returns:
        The mean distortion over aligned speech frames in dB.
    """
    sr = check_sr(sr)
    kwargs = dict(order=order, alpha=alpha, f0_method=f0_method, frame_period=frame_period)
    mc_conv, _ = world_mcep(as_mono(converted, "converted"), sr, **kwargs)
    mc_ref, power_ref = world_mcep(as_mono(reference, "reference"), sr, **kwargs)
    return mcd_from_mcep(
        mc_conv, mc_ref, reference_power_db=power_ref, align=align, silence_db=silence_db
    )


class MelCepstralDistortion(PairMean):
    """Mean MCD (dB) over utterances; ``update(converted, reference)`` with 1-D waveforms.

    Args:
        sr: sample rate of every pair passed to ``update``.
        **kwargs: options of :func:`mel_cepstral_distortion` (``order``, ``alpha``, ...).
    """

    keys = ("mcd_db",)
    higher_is_better = False
    score = staticmethod(mel_cepstral_distortion)
