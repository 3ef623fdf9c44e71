"""All metrics of one converted utterance in one flat dict (for the demo and the eval CLI)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rvc_lora.metrics.audio import Waveform, as_mono, check_sr
from rvc_lora.metrics.f0 import f0_metrics
from rvc_lora.metrics.mcd import mel_cepstral_distortion
from rvc_lora.metrics.pesq import pesq_wb
from rvc_lora.metrics.speaker import cosine, reference_embedding, speaker_embedding
from rvc_lora.metrics.spectral import log_mel_l1, spectral_convergence

log = logging.getLogger(__name__)

SCORE_KEYS = (
    "mcd_db",
    "f0_rmse_cents",
    "f0_corr",
    "vuv_error",
    "spectral_convergence",
    "log_mel_l1",
    "pesq",
    "secs_target",
    "secs_source",
)


def lengths_compatible(n_a: int, n_b: int, sr: int) -> bool:
    """Whether two signals can be compared frame by frame: lengths within 10 ms or 1 %."""
    return abs(n_a - n_b) <= max(sr // 100, 0.01 * max(n_a, n_b))


def _embedding_or_none(wav: np.ndarray, sr: int, what: str) -> np.ndarray | None:
    try:
        return speaker_embedding(wav, sr)
    except ValueError as exc:  # silent output or no speech found: score NaN, keep going
        log.warning("no speaker embedding for the %s (%s); its SECS is NaN", what, exc)
        return None


def _secs(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return math.nan if a is None or b is None else cosine(a, b)


def score_pair(
    converted: Waveform,
    reference: Waveform,
    sr: int,
    *,
    source: Waveform | None = None,
    targets: Sequence[Waveform] | None = None,
    target_embedding: np.ndarray | None = None,
    pesq: bool = False,
    time_aligned: bool | None = None,
    f0_method: str = "harvest",
    f0_models: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Score a converted utterance against a reference utterance of the target speaker.

    Keys (all floats, see :data:`SCORE_KEYS`):

    - ``mcd_db``, ``f0_rmse_cents``, ``f0_corr``, ``vuv_error``: always. MCD is DTW-aligned;
      the F0 metrics too, unless ``time_aligned=True`` says the pair shares a time axis (equal
      lengths alone do not: a conversion can have as many frames as an unaligned reference).
    - ``spectral_convergence``, ``log_mel_l1``: only when the signals share a time axis
      (``time_aligned``; by default when :func:`lengths_compatible`). A parallel utterance
      spoken separately is never on the same time axis: these keys are then absent.
    - ``pesq``: only when asked for (``pesq=True``) and time-aligned, since PESQ assumes
      time-aligned signals; NaN when PESQ finds no speech.
    - ``secs_target``: speaker similarity with the target: ``target_embedding`` if given, else
      the mean embedding of ``targets`` if given, else the reference's embedding.
    - ``secs_source``: speaker similarity with ``source`` (the unconverted input), if given.

    SECS is NaN when a signal has no speech for the speaker encoder.

    Args:
        converted, reference: ``[N]`` / ``[M]`` waveforms at ``sr`` (numpy or torch).
        source: the conversion's input at ``sr``.
        targets: utterances of the target speaker at ``sr``.
        target_embedding: a precomputed target embedding ``[256]`` (from
            :func:`rvc_lora.metrics.speaker.reference_embedding`), to embed the set only once.
        f0_method, f0_models: the F0 metrics' tracker and, for ``fcpe`` / ``rmvpe``, its loaded
            network (:func:`rvc_lora.metrics.f0.f0_metrics`).
    """
    sr = check_sr(sr)
    conv = as_mono(converted, "converted")
    ref = as_mono(reference, "reference")
    scores: dict[str, float] = {"mcd_db": mel_cepstral_distortion(conv, ref, sr)}
    scores.update(
        f0_metrics(
            conv, ref, sr, method=f0_method, align=time_aligned is not True, f0_models=f0_models
        )
    )

    if time_aligned is None:
        time_aligned = lengths_compatible(len(conv), len(ref), sr)
    if time_aligned:
        scores["spectral_convergence"] = spectral_convergence(conv, ref, sr)
        scores["log_mel_l1"] = log_mel_l1(conv, ref, sr)
        if pesq:
            scores["pesq"] = pesq_wb(conv, ref, sr)
    elif pesq:
        log.warning(
            "PESQ skipped: converted (%d samples) and reference (%d) are not time-aligned",
            len(conv),
            len(ref),
        )

    emb_conv = _embedding_or_none(conv, sr, "converted audio")
    if target_embedding is not None:
        target = np.asarray(target_embedding, dtype=np.float64)
    elif targets is not None:
        target = reference_embedding(targets, sr)
    else:
        target = _embedding_or_none(ref, sr, "reference")
    scores["secs_target"] = _secs(emb_conv, target)
    if source is not None:
        scores["secs_source"] = _secs(
            emb_conv, _embedding_or_none(as_mono(source, "source"), sr, "source")
        )
    return scores
