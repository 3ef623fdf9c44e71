"""Mel-cepstral distortion: known values, DTW over time-stretched copies, silence, the Metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvc_lora.metrics.audio import import_pyworld
from rvc_lora.metrics.mcd import MelCepstralDistortion, mcd_from_mcep, mel_cepstral_distortion
from tests.metrics.signals import SR, demo


def test_formula_on_hand_made_cepstra() -> None:
    ref = np.zeros((10, 25))
    conv = np.zeros((10, 25))
    conv[:, 1] = 0.1  # 0.1 in c1 on every frame
    conv[:, 0] = 5.0  # gain differences are not distortion
    expected = 10 / math.log(10) * math.sqrt(2 * 0.1**2)
    assert mcd_from_mcep(conv, ref) == pytest.approx(expected, rel=1e-12)
    assert mcd_from_mcep(conv, ref, align=False) == pytest.approx(expected, rel=1e-12)


def test_identical_signals_score_zero() -> None:
    x = demo("slt", 1)
    assert mel_cepstral_distortion(x, x, SR) < 1e-6
    # torch input, float32 and [1, N] shapes are accepted.
    assert mel_cepstral_distortion(torch.from_numpy(x).float()[None], x, SR) < 1e-6


def test_different_signals_score_high() -> None:
    ref = demo("slt", 1)
    noisy = ref + 0.05 * np.random.default_rng(0).standard_normal(len(ref))
    assert mel_cepstral_distortion(noisy, ref, SR) > 8.0
    assert mel_cepstral_distortion(demo("rms", 1), ref, SR) > 6.0


def _world_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """WORLD resynthesis of ``x`` played ``factor`` times slower: same spectra, new timing."""
    pw = import_pyworld()
    f0, t = pw.dio(x, SR, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, SR)
    sp, ap = pw.cheaptrick(x, f0, t, SR), pw.d4c(x, f0, t, SR)
    idx = np.minimum((np.arange(int(len(f0) * factor)) / factor).astype(int), len(f0) - 1)
    return pw.synthesize(
        f0[idx], np.ascontiguousarray(sp[idx]), np.ascontiguousarray(ap[idx]), SR, 5.0
    )


def test_dtw_aligns_a_time_stretched_copy() -> None:
    ref = demo("slt", 1)
    stretched = _world_stretch(ref, 1.3)
    assert len(stretched) > 1.25 * len(ref)
    mcd_stretched = mel_cepstral_distortion(stretched, ref, SR)
    mcd_other_voice = mel_cepstral_distortion(demo("rms", 1), ref, SR)
    assert mcd_stretched < 0.5 * mcd_other_voice
    # Without alignment the same pair looks worse than another voice: DTW does the work.
    assert mel_cepstral_distortion(stretched, ref, SR, align=False) > mcd_other_voice


def test_silent_reference_frames_are_left_out() -> None:
    x = demo("slt", 1)
    ref = np.concatenate([x, np.zeros(SR)])
    conv = np.concatenate([x, 0.003 * np.random.default_rng(0).standard_normal(SR)])
    # Noise where the reference is silent does not count; with every frame counted it does.
    assert mel_cepstral_distortion(conv, ref, SR) < 1e-6
    assert mel_cepstral_distortion(conv, ref, SR, silence_db=np.inf) > 0.5


def test_bad_input() -> None:
    x = demo("slt", 1)
    with pytest.raises(ValueError, match="mono"):
        mel_cepstral_distortion(np.stack([x, x]), x, SR)
    with pytest.raises(ValueError, match="NaN"):
        mel_cepstral_distortion(x * np.nan, x, SR)
    with pytest.raises(ValueError, match="positive integer"):
        mel_cepstral_distortion(x, x, 0)


def test_metric_is_the_mean_over_utterances_and_resets() -> None:
    pairs = [(demo("rms", s), demo("slt", s)) for s in (1, 2, 3)]
    values = [mel_cepstral_distortion(c, r, SR) for c, r in pairs]
    metric = MelCepstralDistortion(SR)
    for c, r in pairs:
        metric.update(c, r)
    assert metric.compute().item() == pytest.approx(np.mean(values), rel=1e-12)
    metric.reset()
    metric.update(*pairs[0])
    assert metric.compute().item() == pytest.approx(values[0], rel=1e-12)
