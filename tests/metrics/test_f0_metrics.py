"""F0 metrics: known cents offsets on pitch-shifted harmonic signals, V/UV, the Metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rvc_lora.metrics.f0 import F0Error, aligned_frames, f0_metrics, f0_rmse_cents, f0_scores
from tests.metrics.signals import SR, vowel_glide


def test_scores_on_hand_made_tracks() -> None:
    conv = np.array([100.0, 200.0, 0.0, 0.0, 150.0])
    ref = np.array([100.0 * 2 ** (1 / 12), 200.0, 0.0, 120.0, 0.0])
    scores = f0_scores(conv, ref)
    assert scores["f0_rmse_cents"] == pytest.approx(math.sqrt(100.0**2 / 2))
    assert scores["vuv_error"] == pytest.approx(2 / 5)
    assert scores["f0_corr"] == pytest.approx(1.0)
    # Correlation is undefined on a constant track; RMSE on no common voiced frame.
    flat = f0_scores(np.full(4, 100.0), np.array([100.0, 110.0, 120.0, 130.0]))
    assert math.isnan(flat["f0_corr"]) and flat["f0_rmse_cents"] > 0
    none = f0_scores(np.array([0.0, 100.0]), np.array([100.0, 0.0]))
    assert math.isnan(none["f0_rmse_cents"]) and none["vuv_error"] == 1.0


@pytest.mark.parametrize("cents", [100, 300])
def test_pitch_shifted_copy(cents: int) -> None:
    ref = vowel_glide(2.0)
    shifted = vowel_glide(2.0, cents=cents)
    scores = f0_metrics(shifted, ref, SR)  # DTW by default
    assert scores["f0_rmse_cents"] == pytest.approx(cents, abs=5)
    assert scores["f0_corr"] > 0.99
    assert scores["vuv_error"] < 0.02


def test_pitch_shifted_and_stretched_copy_is_aligned() -> None:
    ref = vowel_glide(2.0)
    slower = vowel_glide(2.0, cents=300, stretch=1.25)
    assert aligned_frames(slower, ref, True).shape[0] >= len(slower) // 160
    scores = f0_metrics(slower, ref, SR)  # DTW
    assert scores["f0_rmse_cents"] == pytest.approx(300, abs=10)
    assert scores["f0_corr"] > 0.98
    # Pairing frames one to one instead compares different parts of the glide.
    unaligned = f0_metrics(slower, ref, SR, align=False)
    assert abs(unaligned["f0_rmse_cents"] - 300) > 20


def test_voiced_against_silent() -> None:
    voiced = vowel_glide(1.0)
    scores = f0_metrics(np.zeros_like(voiced), voiced, SR)
    assert scores["vuv_error"] == pytest.approx(1.0, abs=0.02)  # harvest leaves the edge frame
    assert math.isnan(scores["f0_rmse_cents"]) and math.isnan(scores["f0_corr"])


def test_other_rates_are_resampled() -> None:
    import librosa

    ref = vowel_glide(1.0)
    shifted = vowel_glide(1.0, cents=100)
    up = [
        librosa.resample(x, orig_sr=SR, target_sr=22050, res_type="soxr_hq") for x in (shifted, ref)
    ]
    assert f0_rmse_cents(*up, 22050, method="dio") == pytest.approx(100, abs=5)


def test_metric_is_the_mean_over_utterances_and_resets() -> None:
    ref = vowel_glide(1.0)
    pairs = [(vowel_glide(1.0, cents=c), ref) for c in (50, 100, 200)]
    values = [f0_metrics(c, r, SR, method="dio") for c, r in pairs]
    metric = F0Error(SR, method="dio")
    for c, r in pairs:
        metric.update(c, r)
    result = metric.compute()
    for key in ("f0_rmse_cents", "f0_corr", "vuv_error"):
        assert result[key].item() == pytest.approx(np.mean([v[key] for v in values]), rel=1e-12)
    metric.reset()
    metric.update(*pairs[1])
    assert metric.compute()["f0_rmse_cents"].item() == pytest.approx(values[1]["f0_rmse_cents"])


def test_undefined_values_are_skipped_by_the_metric() -> None:
    voiced = vowel_glide(1.0)
    metric = F0Error(SR)  # harvest: dio misses half of this signal's voiced frames
    metric.update(np.zeros_like(voiced), voiced)  # RMSE and corr undefined, V/UV error ~1
    metric.update(vowel_glide(1.0, cents=100), voiced)
    result = metric.compute()
    assert result["f0_rmse_cents"].item() == pytest.approx(100, abs=5)
    assert result["vuv_error"].item() == pytest.approx(0.5, abs=0.02)


def test_equal_lengths_do_not_mean_aligned() -> None:
    # Issue 16 bug 10: ``align=None`` paired equal-length signals frame by frame, so the same
    # glide 0.4 s later scored ~120 cents against itself.
    glide, rng = vowel_glide(2.0), np.random.default_rng(1)
    pad = [0.003 * rng.standard_normal(int(s * SR)) for s in (0.2, 0.6, 0.6, 0.2)]
    ref = np.concatenate([pad[0], glide, pad[1]])
    late = np.concatenate([pad[2], glide, pad[3]])
    assert len(late) == len(ref)
    scores = f0_metrics(late, ref, SR, method="dio")
    assert scores["f0_rmse_cents"] < 5.0 and scores["vuv_error"] < 0.02
    frame_by_frame = f0_metrics(late, ref, SR, method="dio", align=False)
    assert frame_by_frame["f0_rmse_cents"] > 100
    with pytest.raises(TypeError, match="align must be True"):
        aligned_frames(late, ref, None)  # type: ignore[arg-type]
