"""Evaluation metrics for voice conversion: MCD, F0 error, spectral distances, PESQ, speaker
similarity and real-time factor.

Every metric has a functional form on 1-D waveforms (numpy or torch) with an explicit sample
rate, and a ``torchmetrics.Metric`` that averages it over utterances. :func:`score_pair` runs
them all on one converted utterance. Heavy dependencies (pesq, resemblyzer, pyworld) are
imported on first use.
"""

from __future__ import annotations

from rvc_lora.metrics.base import PairMean, UtteranceMean
from rvc_lora.metrics.dtw import dtw, dtw_align
from rvc_lora.metrics.f0 import (
    F0_KEYS,
    F0Error,
    f0_correlation,
    f0_metrics,
    f0_rmse_cents,
    f0_scores,
    vuv_error_rate,
)
from rvc_lora.metrics.mcd import MelCepstralDistortion, mcd_from_mcep, mel_cepstral_distortion
from rvc_lora.metrics.mcep import alpha_for_sr, mcep_to_sp, sp_to_mcep, world_mcep
from rvc_lora.metrics.pesq import PESQ_WB_MAX, WidebandPESQ, pesq_wb
from rvc_lora.metrics.rtf import RealTimeFactor, Timer, real_time_factor
from rvc_lora.metrics.score import SCORE_KEYS, score_pair
from rvc_lora.metrics.speaker import (
    SpeakerSimilarity,
    load_speaker_encoder,
    mean_embedding,
    reference_embedding,
    speaker_embedding,
    speaker_similarity,
    speaker_similarity_to_set,
)
from rvc_lora.metrics.spectral import (
    LogMelL1,
    SpectralConvergence,
    log_mel_l1,
    spectral_convergence,
)

__all__ = [
    "F0_KEYS",
    "PESQ_WB_MAX",
    "SCORE_KEYS",
    "F0Error",
    "LogMelL1",
    "MelCepstralDistortion",
    "RealTimeFactor",
    "SpeakerSimilarity",
    "SpectralConvergence",
    "Timer",
    "PairMean",
    "UtteranceMean",
    "WidebandPESQ",
    "alpha_for_sr",
    "dtw",
    "dtw_align",
    "f0_correlation",
    "f0_metrics",
    "f0_rmse_cents",
    "f0_scores",
    "load_speaker_encoder",
    "log_mel_l1",
    "mcd_from_mcep",
    "mcep_to_sp",
    "mean_embedding",
    "mel_cepstral_distortion",
    "pesq_wb",
    "real_time_factor",
    "reference_embedding",
    "score_pair",
    "sp_to_mcep",
    "spectral_convergence",
    "speaker_embedding",
    "speaker_similarity",
    "speaker_similarity_to_set",
    "vuv_error_rate",
    "world_mcep",
]
