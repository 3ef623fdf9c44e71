"""Wide-band PESQ: the package's maximum for identical input, noise lowers it, NaN without speech."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from rvc_lora.metrics.pesq import PESQ_WB_MAX, WidebandPESQ, pesq_wb
from tests.metrics.signals import SR, demo


def test_identical_speech_scores_the_maximum() -> None:
    x = demo("slt", 1)
    assert pesq_wb(x, x, SR) == pytest.approx(PESQ_WB_MAX, abs=1e-3)
    assert PESQ_WB_MAX == pytest.approx(4.644, abs=1e-3)


def test_noise_lowers_the_score() -> None:
    x = demo("slt", 1)
    noise = np.random.default_rng(0).standard_normal(len(x))
    light, heavy = (pesq_wb(x + a * noise, x, SR) for a in (0.001, 0.02))
    assert PESQ_WB_MAX > light > heavy and heavy < 2.0


def test_other_rates_are_resampled_to_16k() -> None:
    import librosa

    x = librosa.resample(demo("slt", 1), orig_sr=SR, target_sr=48000, res_type="soxr_hq")
    assert pesq_wb(x, x, 48000) == pytest.approx(PESQ_WB_MAX, abs=1e-3)


def test_unscorable_pairs_give_nan_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rvc_lora.metrics.pesq"):
        assert math.isnan(pesq_wb(np.zeros(SR), np.zeros(SR), SR))
        assert math.isnan(pesq_wb(np.ones(1000), np.ones(1000), SR))
    assert "NoUtterancesError" in caplog.text and "BufferTooShortError" in caplog.text


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")  # NaN by design
def test_metric_is_the_mean_and_skips_nan() -> None:
    x = demo("slt", 2)
    rng = np.random.default_rng(1)
    convs = [x + a * rng.standard_normal(len(x)) for a in (0.0, 0.002, 0.01)]
    values = [pesq_wb(c, x, SR) for c in convs]
    metric = WidebandPESQ(SR)
    for c in convs:
        metric.update(c, x)
    metric.update(np.zeros(SR), np.zeros(SR))  # NaN: not counted
    assert metric.compute().item() == pytest.approx(np.mean(values), rel=1e-12)
    metric.reset()
    assert math.isnan(metric.compute().item())
