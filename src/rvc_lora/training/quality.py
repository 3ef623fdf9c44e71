"""Cheap quality metrics of validation outputs: ``val/mcd``, ``val/f0_rmse`` and ``val/secs``.

Validation's ``infer`` output is on the ground truth's time axis (same content features, same
F0, same frame count), so MCD and the F0 error pair frames one to one (no DTW). MCD uses dio for
its WORLD analysis and the F0 error Praat's pm: together about 0.1 s per second of audio on one
CPU core, done on a few items per validation only. SECS is the cosine similarity of the
converted item's and the original item's resemblyzer speaker embeddings
(:mod:`rvc_lora.metrics.speaker`); the original's embedding is computed once per run (the same
items come back at every validation).
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import torch

log = logging.getLogger(__name__)

VAL_MCD = "val/mcd"  # dB, lower is better: the checkpoint monitor (configs/callbacks)
VAL_F0_RMSE = "val/f0_rmse"  # cents, on frames voiced in both
VAL_SECS = "val/secs"  # speaker similarity to the original item, cosine, higher is better
KEYS = (VAL_MCD, VAL_F0_RMSE, VAL_SECS)  # the order of the values score_item returns


def _embedding(wav: np.ndarray, sr: int) -> np.ndarray:
    from rvc_lora.metrics.speaker import speaker_embedding

    if not np.all(np.isfinite(wav)):
        raise ValueError("speaker embedding: the signal is not finite")
    return speaker_embedding(wav, sr)


def secs_item(
    converted: np.ndarray,
    reference: np.ndarray,
    sr: int,
    cache: dict[bytes, np.ndarray] | None = None,
) -> float:
    """SECS of one pair ``[N]``, ``[N]`` at ``sr``: NaN when either embedding cannot be made
    (silent or non-finite audio, no speech found by the VAD).

    Args:
        cache: reference embeddings by a digest of the reference audio, filled and reused.
    """
    from rvc_lora.metrics.speaker import cosine

    try:
        key = f"{sr}:".encode() + hashlib.blake2b(reference.tobytes(), digest_size=16).digest()
        ref = cache.get(key) if cache is not None else None
        if ref is None:
            ref = _embedding(reference, sr)
            if cache is not None:
                cache[key] = ref
        return cosine(_embedding(converted, sr), ref)
    except ValueError as err:
        log.debug("val/secs: item skipped (%s)", err)
        return math.nan


def score_item(
    converted: np.ndarray,
    reference: np.ndarray,
    sr: int,
    cache: dict[bytes, np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """``(MCD dB, F0 RMSE cents, SECS)`` of one time-aligned pair ``[N]``, ``[N]`` at ``sr``.

    A value the metric cannot compute (silent or non-finite output, no frame voiced in both) is
    NaN: an untrained model must not end the run. ``cache``: see :func:`secs_item`.
    """
    from rvc_lora.metrics import f0_metrics, mel_cepstral_distortion

    try:
        mcd = mel_cepstral_distortion(converted, reference, sr, f0_method="dio", align=False)
    except ValueError as err:
        log.debug("val/mcd: item skipped (%s)", err)
        mcd = math.nan
    try:
        f0 = f0_metrics(converted, reference, sr, method="pm", align=False)["f0_rmse_cents"]
    except ValueError as err:
        log.debug("val/f0_rmse: item skipped (%s)", err)
        f0 = math.nan
    return mcd, f0, secs_item(converted, reference, sr, cache)


def warm_up(sr: int) -> None:
    """Score a 1 s synthetic vowel once, so the metrics' libraries (WORLD, Praat, the speaker
    encoder and its weights) are loaded before a run's memory baseline: a reused joblib worker
    has them already, a fresh process would otherwise count them as training memory."""
    t = np.arange(sr, dtype=np.float64) / sr
    f0 = 120.0 * (1.0 + 0.05 * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)).astype(np.float32) * 0.3
    score_item(wav, wav, sr)
    from rvc_lora.metrics.speaker import default_speaker_encoder

    default_speaker_encoder()  # the VAD may find no speech in a vowel: load the encoder anyway


class ValQuality:
    """Scores of the first ``limit`` validation items of an epoch, averaged at its end.

    Args:
        limit: items scored per validation (0 turns the metrics off).
    """

    def __init__(self, limit: int = 4) -> None:
        if int(limit) != limit or limit < 0:
            raise ValueError(f"val_metric_items must be an integer >= 0, got {limit}")
        self.limit = int(limit)
        self.scores: list[tuple[float, float, float]] = []
        # The original items' speaker embeddings: the same items come back every validation.
        self.embeddings: dict[bytes, np.ndarray] = {}

    def reset(self) -> None:
        self.scores = []

    def add_batch(
        self, audio: torch.Tensor, wav: torch.Tensor, lengths: torch.Tensor, hop: int, sr: int
    ) -> None:
        """Score items of a batch until ``limit`` items are scored this epoch.

        Args:
            audio: ``infer`` output ``[B, 1, T_out]``; wav: ground truth ``[B, 1, T_wav]``;
            lengths: valid frames ``[B]``; hop: samples per frame.
        """
        for i in range(len(lengths)):
            if len(self.scores) >= self.limit:
                return
            n = min(int(lengths[i]) * hop, audio.shape[-1], wav.shape[-1])
            if n == 0:
                continue
            conv = audio[i, 0, :n].detach().float().cpu().numpy()
            ref = wav[i, 0, :n].detach().float().cpu().numpy()
            self.scores.append(score_item(conv, ref, sr, self.embeddings))

    def means(self) -> dict[str, float]:
        """``{val/mcd, val/f0_rmse, val/secs}`` averaged over the items where each is defined
        (NaN when none is)."""
        return finite_means(self.scores)


def finite_means(scores: list[tuple[float, float, float]]) -> dict[str, float]:
    """Per-key means of :func:`score_item` tuples over the items where each value is finite
    (NaN when none is), under the ``val/`` keys of :data:`KEYS`."""
    values = np.array(scores, dtype=np.float64).reshape(-1, len(KEYS))
    out = {}
    for key, column in zip(KEYS, values.T):
        finite = column[np.isfinite(column)]
        out[key] = float(finite.mean()) if finite.size else math.nan
    return out
