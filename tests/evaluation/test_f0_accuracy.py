"""GPE, fine RMSE, VDE and FFE on hand-made tracks with known answers, and pooling by frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rvc_lora.evaluation.f0_accuracy import (
    GROSS_CENTS,
    F0Counts,
    f0_counts,
    pool,
    sample_track,
)


def hz(cents: float, base: float = 200.0) -> float:
    return base * 2 ** (cents / 1200)


def test_gross_threshold_is_twenty_percent() -> None:
    assert GROSS_CENTS == pytest.approx(315.641, abs=1e-3)
    # 19.9 % sharp is fine, 20.1 % sharp is gross; 20.1 % flat too.
    c = f0_counts(np.full(3, 100.0), np.array([119.9, 120.1, 100 / 1.201]))
    assert (c.both_voiced, c.gross) == (3, 2)


def test_every_rate_on_a_hand_made_track() -> None:
    # 10 frames: 2 unvoiced in both, 1 voiced only in the reference, 1 only in the estimate,
    # 6 voiced in both: errors +100, -100, +50, 0 cents, one octave up, one fifth down (gross).
    ref = np.array([0, 0, 200, 0, 200, 200, 200, 200, 200, 200], dtype=float)
    est = np.array([0, 0, 0, 150, hz(100), hz(-100), hz(50), 200, 400, hz(-700)], dtype=float)
    c = f0_counts(ref, est)
    assert (c.frames, c.ref_voiced, c.est_voiced, c.both_voiced) == (10, 7, 7, 6)
    assert (c.gross, c.voicing_errors, c.fine) == (2, 2, 4)
    assert c.gpe == pytest.approx(100 * 2 / 6)
    # the fine frames only: the octave and the fifth are left out of the RMSE
    assert c.rmse_cents == pytest.approx(math.sqrt((100**2 + 100**2 + 50**2 + 0) / 4))
    assert c.vde == pytest.approx(20.0)
    assert c.ffe == pytest.approx(40.0)


def test_identical_tracks_score_zero_and_a_shift_scores_its_cents() -> None:
    ref = np.array([0, 110, 220, 330, 0], dtype=float)
    same = f0_counts(ref, ref)
    assert (same.gpe, same.rmse_cents, same.vde, same.ffe) == (0.0, 0.0, 0.0, 0.0)
    sharp = f0_counts(ref, ref * 2 ** (30 / 1200))
    assert sharp.rmse_cents == pytest.approx(30.0)
    assert sharp.gpe == 0.0
    octave = f0_counts(ref, ref * 2)
    assert (octave.gpe, octave.ffe) == (100.0, 60.0)
    assert math.isnan(octave.rmse_cents)  # no fine frame left


def test_undefined_rates_are_nan_and_none_in_the_summary() -> None:
    c = f0_counts(np.zeros(4), np.array([0, 0, 100, 0.0]))
    assert math.isnan(c.gpe) and math.isnan(c.rmse_cents)
    assert (c.vde, c.ffe) == (25.0, 25.0)
    s = c.summary()
    assert s["gpe"] is None and s["rmse_cents"] is None and s["vde"] == 25.0
    json.dumps(s, allow_nan=False)  # strict JSON
    empty = F0Counts()
    assert math.isnan(empty.vde) and math.isnan(empty.ffe)


def test_pooling_weighs_frames_not_files() -> None:
    # file a: 2 frames voiced in both, 1 gross (GPE 50 %); file b: 8 frames, none gross (0 %).
    a = f0_counts(np.array([100.0, 100.0]), np.array([100.0, 200.0]))
    b = f0_counts(np.full(8, 100.0), np.full(8, 100.0 * 2 ** (10 / 1200)))
    both = pool([a, b])
    assert both.gpe == pytest.approx(10.0)  # 1 / 10 frames, not the files' mean 25 %
    assert both.rmse_cents == pytest.approx(math.sqrt(8 * 100 / 9))
    assert both == a + b
    assert pool([]) == F0Counts()
    # the same numbers as one comparison of the joined tracks
    joined = f0_counts(
        np.r_[[100.0, 100.0], np.full(8, 100.0)],
        np.r_[[100.0, 200.0], [100.0 * 2 ** (10 / 1200)] * 8],
    )
    assert joined.summary() == both.summary()


@pytest.mark.parametrize(
    ("ref", "est", "message"),
    [
        (np.zeros(3), np.zeros(4), "differ in length: reference 3, estimate 4"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "must be 1-D"),
        (np.array([1.0, np.nan]), np.zeros(2), "finite Hz >= 0"),
        (np.zeros(2), np.array([-1.0, 0.0]), "estimate F0 track must be finite"),
    ],
)
def test_bad_tracks_are_refused(ref, est, message) -> None:
    with pytest.raises(ValueError, match=message):
        f0_counts(ref, est)


def test_sample_track_on_grid_is_exact_and_off_grid_interpolates() -> None:
    track = np.array([0.0, 100.0, 200.0, 300.0, 0.0, 500.0])  # frames every 5 ms
    # RVC's 10 ms frames on a 5 ms grid: every second value, bit for bit
    t = np.arange(3) * 0.01
    assert np.array_equal(sample_track(track, 0.005, t), track[::2])
    # half-way between two voiced frames: their mean; next to an unvoiced one: the nearest
    got = sample_track(track, 0.005, np.array([0.0075, 0.0020, 0.0035, 0.0170, 0.0180]))
    assert np.allclose(got, [150.0, 0.0, 100.0, 300.0, 0.0])
    got = sample_track(track, 0.005, np.array([0.0060, 0.0240, 0.0250, 0.0260, -0.001]))
    assert np.allclose(got, [120.0, 500.0, 500.0, 0.0, 0.0])
