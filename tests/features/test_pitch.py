"""Coarse pitch follows RVC's formula to the integer; pitch shift is a plain ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvc_lora.features.pitch import coarse_pitch, shift_pitch


def _reference_coarse(f0: float) -> float:
    """RVC's quantiser for one value, written independently with ``math`` (unrounded)."""
    if f0 <= 0:
        return 1.0
    lo, hi = 1127 * math.log(1 + 50 / 700), 1127 * math.log(1 + 1100 / 700)
    scaled = (1127 * math.log(1 + f0 / 700) - lo) * 254 / (hi - lo) + 1
    return min(max(scaled, 1.0), 255.0)


def test_known_values() -> None:
    f0 = np.array([0.0, 50.0, 100.0, 440.0, 1100.0, 2000.0])
    # By hand: 100 Hz -> 19.72 -> 20; 440 Hz -> 122.48 -> 122; 50 Hz is the floor (1);
    # 1100 Hz the ceiling (255); 2000 Hz (372.6) is clipped; 0 Hz (unvoiced) -> 1.
    expected = [1, 1, 20, 122, 255, 255]
    out = coarse_pitch(f0)
    assert out.dtype == np.int64
    assert out.tolist() == expected
    assert [round(_reference_coarse(v)) for v in f0] == expected
    assert _reference_coarse(100.0) == pytest.approx(19.7246, abs=1e-4)
    assert _reference_coarse(440.0) == pytest.approx(122.4806, abs=1e-4)


def test_torch_matches_numpy_on_a_dense_sweep() -> None:
    f0 = np.concatenate([[0.0, -3.0], np.linspace(0.0, 1500.0, 20001)])
    out_np = coarse_pitch(f0)
    out_t = coarse_pitch(torch.from_numpy(f0))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.int64
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    assert out_np.min() == 1 and out_np.max() == 255
    assert np.all(np.diff(out_np[2:]) >= 0)  # monotone in Hz
    # rounding agrees with the independent reference away from exact halves
    ref = np.array([_reference_coarse(v) for v in f0])
    away = np.abs(ref - np.floor(ref) - 0.5) > 1e-6
    np.testing.assert_array_equal(out_np[away], np.floor(ref[away] + 0.5))


# Frequencies whose scaled mel is 62.5 and 63.5 in float64 (found by searching ulps).
_HALVES = [  # (f0 Hz, its scaled mel, the even integer it must round to)
    (float.fromhex("0x1.c62c516aa84afp+7"), 62.5, 62),  # 227.0866 Hz: rounds down
    (float.fromhex("0x1.cc93316b6538ep+7"), 63.5, 64),  # 230.2875 Hz: rounds up
]


@pytest.mark.parametrize(("f0", "half", "even"), _HALVES)
def test_exact_halves_round_to_even(f0: float, half: float, even: int) -> None:
    lo, hi = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    scaled = ((1127 * np.log(1 + np.array([f0]) / 700)) - lo) * 254 / (hi - lo) + 1
    assert abs(scaled[0] - half) < 1e-9
    out = int(coarse_pitch(np.array([f0]))[0])
    assert out == int(np.rint(scaled[0]))
    assert int(coarse_pitch(torch.tensor([f0], dtype=torch.float64))[0]) == out
    if scaled[0] % 1 == 0.5:  # exact on this machine's libm: half goes to the even neighbour
        assert out == even


def test_nan_and_negative_are_unvoiced() -> None:
    assert coarse_pitch(np.array([np.nan, -100.0, np.inf])).tolist() == [1, 1, 1]


def test_shift_pitch() -> None:
    f0 = np.array([0.0, 100.0, 220.0, 0.0, 440.0])
    np.testing.assert_allclose(shift_pitch(f0, 12), [0, 200, 440, 0, 880], rtol=1e-12)
    np.testing.assert_allclose(shift_pitch(f0, -12), [0, 50, 110, 0, 220], rtol=1e-12)
    np.testing.assert_array_equal(shift_pitch(f0, 0), f0)
    f32 = f0.astype(np.float32)
    assert shift_pitch(f32, 3).dtype == np.float32
    t = torch.tensor(f0)
    out = shift_pitch(t, 7)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, t * 2 ** (7 / 12))
    assert out[0] == 0 and out[3] == 0
    assert t[1] == 100.0  # input untouched
