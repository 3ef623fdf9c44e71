"""Spectral convergence and log-mel L1: zero for identical signals, known scalings, the Metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_lora.metrics.audio import stft_params
from rvc_lora.metrics.spectral import (
    LogMelL1,
    SpectralConvergence,
    log_mel_l1,
    spectral_convergence,
)
from tests.metrics.signals import SR, demo


def test_identical_signals_score_zero() -> None:
    x = demo("slt", 1)
    assert spectral_convergence(x, x, SR) == 0.0
    assert log_mel_l1(torch.from_numpy(x), x, SR) == 0.0


def test_known_scaling() -> None:
    # Half the amplitude: every magnitude halves (up to the 1e-6 floor inside the STFT
    # magnitude), so convergence is 0.5 and the log-mel moves by log(2) in every bin above its
    # 1e-5 clamp: a noise floor keeps the pauses above it.
    x = demo("slt", 1) + 0.003 * np.random.default_rng(0).standard_normal(len(demo("slt", 1)))
    assert spectral_convergence(0.5 * x, x, SR) == pytest.approx(0.5, abs=1e-3)
    assert log_mel_l1(0.5 * x, x, SR) == pytest.approx(np.log(2), abs=1e-3)


def test_noise_scores_worse_than_less_noise() -> None:
    x = demo("slt", 2)
    noise = np.random.default_rng(0).standard_normal(len(x))
    sc = [spectral_convergence(x + a * noise, x, SR) for a in (0.003, 0.03)]
    l1 = [log_mel_l1(x + a * noise, x, SR) for a in (0.003, 0.03)]
    assert 0 < sc[0] < sc[1] and 0 < l1[0] < l1[1]


def test_longer_signal_is_trimmed() -> None:
    x = demo("slt", 1)
    padded = np.concatenate([x, np.random.default_rng(0).standard_normal(SR)])
    assert spectral_convergence(padded, x, SR) == 0.0
    assert log_mel_l1(x, padded, SR) == 0.0


def test_stft_settings_per_rate() -> None:
    assert stft_params(16000) == (1024, 160)
    assert stft_params(40000) == (2048, 400)
    assert stft_params(48000) == (2048, 480)


def test_too_short() -> None:
    with pytest.raises(ValueError, match="at least 1024 samples"):
        spectral_convergence(np.ones(500), np.ones(500), SR)


def test_metrics_are_means_and_reset() -> None:
    ref = demo("slt", 1)
    rng = np.random.default_rng(1)
    convs = [ref + a * rng.standard_normal(len(ref)) for a in (0.001, 0.01, 0.1)]
    for cls, fn in ((SpectralConvergence, spectral_convergence), (LogMelL1, log_mel_l1)):
        values = [fn(c, ref, SR) for c in convs]
        metric = cls(SR)
        for c in convs:
            metric.update(c, ref)
        assert metric.compute().item() == pytest.approx(np.mean(values), rel=1e-12)
        metric.reset()
        metric.update(convs[2], ref)
        assert metric.compute().item() == pytest.approx(values[2], rel=1e-12)
