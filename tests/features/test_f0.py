"""compute_f0: RVC's pm/harvest/dio on synthetic tones, frame counts, silence and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_lora.features.f0 import F0_METHODS, compute_f0
from rvc_lora.features.rmvpe import E2E, RMVPE, RMVPEConfig

SR = 16000
CLASSICAL = ["pm", "harvest", "dio"]


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return 0.01 * np.random.default_rng(seed).standard_normal(n)


def _tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    # A little noise (about -31 dB): WORLD's harvest finds almost no voiced frame in a
    # mathematically pure sine (2 of 101 here), while any real recording has a noise floor.
    t = np.arange(int(SR * seconds)) / SR
    return 0.5 * np.sin(2 * np.pi * hz * t) + _noise(len(t))


def _glide(lo: float, hi: float, seconds: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Exponential glide and its true f0 at each 10 ms frame start."""
    n = int(SR * seconds)
    f = lo * (hi / lo) ** (np.arange(n) / n)
    x = 0.5 * np.sin(2 * np.pi * np.cumsum(f) / SR) + _noise(n, 1)
    return x, f[::160][: n // 160]


@pytest.mark.parametrize("method", CLASSICAL)
def test_steady_tone(method: str) -> None:
    x = _tone(220.0)
    f0 = compute_f0(x, method)
    assert f0.shape == (len(x) // 160,) and f0.dtype == np.float32
    voiced = f0[f0 > 0]
    assert len(voiced) > 0.9 * len(f0)
    assert abs(np.median(voiced) / 220.0 - 1) < 0.01


@pytest.mark.parametrize("method", CLASSICAL)
def test_glide_is_tracked(method: str) -> None:
    x, truth = _glide(150.0, 300.0)
    f0 = compute_f0(x, method)
    voiced = f0 > 0
    assert voiced.mean() > 0.9
    assert np.corrcoef(f0[voiced], truth[voiced])[0, 1] > 0.95
    assert np.median(np.abs(f0[voiced] / truth[voiced] - 1)) < 0.01  # and aligned in time


@pytest.mark.parametrize("method", CLASSICAL)
def test_silence_and_short_input(method: str) -> None:
    np.testing.assert_array_equal(compute_f0(np.zeros(SR), method), np.zeros(100))
    assert compute_f0(np.zeros(100), method).shape == (0,)  # under one frame
    assert compute_f0(_tone(220.0)[:100], method, p_len=3).tolist() == [0, 0, 0]
    # shorter than Praat's 3-period window (960 samples at 50 Hz): zeros, not a PraatError
    assert compute_f0(_tone(220.0)[:500], method).shape == (3,)


def test_p_len_pads_and_trims() -> None:
    x = _tone(220.0)
    for method in CLASSICAL:
        assert compute_f0(x, method, p_len=130).shape == (130,)
        assert compute_f0(x, method, p_len=60).shape == (60,)
    # pm is centred the RVC way: (p_len - len + 1) // 2 zeros in front
    pm = compute_f0(x, "pm", p_len=130)
    assert np.all(pm[:18] == 0) and np.all(pm[-18:] == 0) and pm[20] > 0


def test_harvest_median_filter_switch() -> None:
    x, _ = _glide(150.0, 300.0, seconds=1.0)
    raw = compute_f0(x, "harvest", filter_radius=0)
    filtered = compute_f0(x, "harvest", filter_radius=3)
    from scipy.signal import medfilt

    np.testing.assert_allclose(filtered, medfilt(raw.astype(np.float64), 3), rtol=1e-6)


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        compute_f0(_tone(220.0), "crepe-ultra")
    for name in F0_METHODS:
        assert name in str(err.value)
    assert set(F0_METHODS) >= {"pm", "harvest", "rmvpe"}


def test_rmvpe_without_model_is_a_clear_error() -> None:
    for x in (_tone(220.0), np.zeros(SR)):
        with pytest.raises(ValueError, match="rmvpe.*load_rmvpe.*rmvpe.pt"):
            compute_f0(x, "rmvpe")


def test_rmvpe_method_runs_a_model() -> None:
    model = RMVPE(E2E(RMVPEConfig.tiny()))
    x = _tone(220.0, seconds=0.5)
    f0 = compute_f0(x, "rmvpe", rmvpe=model)
    assert f0.shape == (50,) and f0.dtype == np.float32 and np.all(f0 >= 0)
    full = model.infer_from_audio(x)
    np.testing.assert_allclose(f0, full[:50].astype(np.float32))


def test_rejects_bad_audio() -> None:
    with pytest.raises(ValueError, match="mono"):
        compute_f0(np.zeros((2, SR)), "pm")
    with pytest.raises(ValueError, match="NaN"):
        compute_f0(np.full(SR, np.nan), "pm")
