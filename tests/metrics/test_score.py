"""score_pair: which keys appear for aligned and parallel pairs, and that they are the metrics'."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from rvc_lora.metrics import (
    SCORE_KEYS,
    f0_metrics,
    mel_cepstral_distortion,
    reference_embedding,
    score_pair,
    speaker_similarity,
    speaker_similarity_to_set,
)
from rvc_lora.metrics.score import lengths_compatible
from tests.metrics.signals import SR, demo, vowel_glide


def test_time_aligned_pair_gets_every_key(caplog: pytest.LogCaptureFixture) -> None:
    ref = demo("slt", 1)
    conv = ref + 0.005 * np.random.default_rng(0).standard_normal(len(ref))
    source = demo("rms", 1)
    scores = score_pair(conv, ref, SR, source=source, pesq=True)
    assert tuple(scores) == SCORE_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["mcd_db"] == mel_cepstral_distortion(conv, ref, SR)
    assert {k: scores[k] for k in ("f0_rmse_cents", "f0_corr", "vuv_error")} == f0_metrics(
        conv, ref, SR
    )
    assert scores["secs_target"] == pytest.approx(speaker_similarity(conv, SR, ref, SR))
    assert scores["secs_source"] == pytest.approx(speaker_similarity(conv, SR, source, SR))
    assert scores["secs_target"] > 0.95 > 0.8 > scores["secs_source"]
    assert 1.0 < scores["pesq"] < 4.6 and scores["vuv_error"] < 0.1
    assert "skipped" not in caplog.text


def test_parallel_pair_skips_time_aligned_metrics(caplog: pytest.LogCaptureFixture) -> None:
    conv, ref = demo("rms", 2), demo("slt", 2)
    assert not lengths_compatible(len(conv), len(ref), SR)
    targets = [demo("slt", s) for s in (3, 4)]
    with caplog.at_level(logging.WARNING, logger="rvc_lora.metrics.score"):
        scores = score_pair(conv, ref, SR, targets=targets, pesq=True, f0_method="dio")
    assert set(scores) == {"mcd_db", "f0_rmse_cents", "f0_corr", "vuv_error", "secs_target"}
    assert "PESQ skipped" in caplog.text
    assert scores["secs_target"] == pytest.approx(speaker_similarity_to_set(conv, SR, targets))
    # A precomputed target embedding gives the same value without embedding the set again.
    again = score_pair(
        conv, ref, SR, target_embedding=reference_embedding(targets, SR), f0_method="dio"
    )
    assert again["secs_target"] == pytest.approx(scores["secs_target"])


def test_silent_output_has_nan_similarity(caplog: pytest.LogCaptureFixture) -> None:
    ref = demo("slt", 3)[: 2 * SR]
    with caplog.at_level(logging.WARNING, logger="rvc_lora.metrics.score"):
        scores = score_pair(np.zeros_like(ref), ref, SR, f0_method="dio")
    assert math.isnan(scores["secs_target"]) and "no speaker embedding" in caplog.text
    assert scores["vuv_error"] > 0.3 and scores["mcd_db"] > 10


def test_lengths_compatible() -> None:
    assert lengths_compatible(10_000, 10_160, SR)  # one 10 ms hop
    assert not lengths_compatible(10_000, 10_161, SR)
    assert lengths_compatible(100_000, 101_000, SR)  # 1 %
    assert not lengths_compatible(100_000, 101_100, SR)


def _glide_late_by(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The same voiced glide in two signals of equal length, one ``seconds`` later (noise
    around it), so the frame counts match but the speech is not on the same time axis."""
    glide = vowel_glide(2.0)
    rng = np.random.default_rng(1)

    def pad(s: float) -> np.ndarray:
        return 0.003 * rng.standard_normal(int(s * SR))

    ref = np.concatenate([pad(0.2), glide, pad(0.2 + seconds)])
    late = np.concatenate([pad(0.2 + seconds), glide, pad(0.2)])
    return late, ref


def test_equal_length_unaligned_pair_gets_dtw_f0() -> None:
    # Issue 16 bug 10: equal lengths used to mean frame by frame, so the glide 0.4 s late
    # scored ~120 cents against itself.
    late, ref = _glide_late_by(0.4)
    assert len(late) == len(ref)
    scores = score_pair(late, ref, SR, f0_method="dio")
    assert scores["f0_rmse_cents"] < 5.0
    assert scores["f0_corr"] > 0.99 and scores["vuv_error"] < 0.02


def test_time_aligned_pair_scores_f0_frame_by_frame() -> None:
    late, ref = _glide_late_by(0.4)
    scores = score_pair(late, ref, SR, f0_method="dio", time_aligned=True)
    frame_by_frame = f0_metrics(late, ref, SR, method="dio", align=False)
    assert {k: scores[k] for k in frame_by_frame} == frame_by_frame
    assert scores["f0_rmse_cents"] > 100  # a half-octave glide 0.4 s off: ~120 cents
