"""Cheap quality metrics of validation outputs: ``val/mcd`` and ``val/f0_rmse``.

Validation's ``infer`` output is on the ground truth's time axis (same content features, same
F0, same frame count), so both metrics pair frames one to one (no DTW). MCD uses dio for its
WORLD analysis and the F0 error Praat's pm: together about 0.1 s per second of audio on one CPU
core, done on a few items per validation only.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

log = logging.getLogger(__name__)

VAL_MCD = "val/mcd"  # dB, lower is better: the checkpoint monitor (configs/callbacks)
VAL_F0_RMSE = "val/f0_rmse"  # cents, on frames voiced in both


def score_item(converted: np.ndarray, reference: np.ndarray, sr: int) -> tuple[float, float]:
    """``(MCD dB, F0 RMSE cents)`` of one time-aligned pair ``[N]``, ``[N]`` at ``sr``.

    A value the metric cannot compute (silent or non-finite output, no frame voiced in both) is
    NaN: an untrained model must not end the run.
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
    return mcd, f0


class ValQuality:
    """Scores of the first ``limit`` validation items of an epoch, averaged at its end.

    Args:
        limit: items scored per validation (0 turns the metrics off).
    """

    def __init__(self, limit: int = 4) -> None:
        if int(limit) != limit or limit < 0:
            raise ValueError(f"val_metric_items must be an integer >= 0, got {limit}")
        self.limit = int(limit)
        self.scores: list[tuple[float, float]] = []

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
            self.scores.append(score_item(conv, ref, sr))

    def means(self) -> dict[str, float]:
        """``{val/mcd, val/f0_rmse}`` averaged over the items where each is defined (NaN when
        none is)."""
        values = np.array(self.scores, dtype=np.float64).reshape(-1, 2)
        out = {}
        for key, column in zip((VAL_MCD, VAL_F0_RMSE), values.T):
            finite = column[np.isfinite(column)]
            out[key] = float(finite.mean()) if finite.size else math.nan
        return out
