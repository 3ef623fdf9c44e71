"""Wide-band PESQ (ITU-T P.862.2) through the ``pesq`` package, at 16 kHz."""

from __future__ import annotations

import logging
import math

import numpy as np

from rvc_lora.metrics.audio import PESQ_SR, Waveform, as_mono, check_sr, to_16k
from rvc_lora.metrics.base import PairMean

log = logging.getLogger(__name__)

PESQ_WB_MAX = 4.643888473510742  # what pesq 0.0.4 returns for a signal against itself


def pesq_wb(converted: Waveform, reference: Waveform, sr: int) -> float:
    """Wide-band PESQ MOS-LQO of ``converted`` against ``reference`` (about 1.04 .. 4.64).

    PESQ assumes the two signals carry the same speech on the same time axis (it only corrects
    small delays): use it for resyntheses or conversions of the reference itself, not for
    parallel utterances of another speaker. Both are resampled to 16 kHz (soxr) and trimmed to
    the shorter length.

    Returns:
        The score, or NaN (with a logged warning) when PESQ cannot score the pair: no speech
        found in the reference, or a signal too short.
    """
    import pesq as pesq_lib  # imported here: the C extension is only needed for this metric

    sr = check_sr(sr)
    conv = to_16k(as_mono(converted, "converted"), sr)
    ref = to_16k(as_mono(reference, "reference"), sr)
    n = min(len(conv), len(ref))
    try:
        # pesq scales each signal by its peak, which divides by zero for digital silence; the
        # C code then reports "no utterances", handled below.
        with np.errstate(divide="ignore", invalid="ignore"):
            score = pesq_lib.pesq(
                PESQ_SR, ref[:n].astype(np.float32), conv[:n].astype(np.float32), "wb"
            )
        return float(score)
    except pesq_lib.PesqError as exc:
        log.warning(
            "PESQ could not score this pair (%s: %s); returning NaN", type(exc).__name__, exc
        )
        return math.nan


class WidebandPESQ(PairMean):
    """Mean wide-band PESQ over utterances; pairs PESQ cannot score (NaN) are skipped."""

    keys = ("pesq",)
    higher_is_better = True
    score = staticmethod(pesq_wb)
