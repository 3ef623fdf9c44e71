"""Real-time factor: ratio of summed times, the timer, the measuring context."""

from __future__ import annotations

import math
import time

import pytest

from rvc_lora.metrics.rtf import RealTimeFactor, Timer, real_time_factor


def test_timer_measures_a_sleep() -> None:
    with Timer() as t:
        time.sleep(0.05)
    assert 0.045 < t.seconds < 1.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")  # NaN by design
def test_ratio_of_sums() -> None:
    metric = RealTimeFactor()
    metric.update(1.0, 10.0)
    metric.update(3.0, 10.0)
    metric.update(0.5, 5.0)
    assert metric.compute().item() == pytest.approx(4.5 / 25.0)
    metric.reset()
    assert math.isnan(metric.compute().item())
    metric.update(2.0, 4.0)
    assert metric.compute().item() == pytest.approx(real_time_factor(2.0, 4.0)) == 0.5


def test_measure_adds_the_block() -> None:
    metric = RealTimeFactor()
    with metric.measure(audio_seconds=1.0) as t:
        time.sleep(0.02)
    assert metric.compute().item() == pytest.approx(t.seconds) and t.seconds >= 0.015
    with pytest.raises(RuntimeError), metric.measure(audio_seconds=1.0):
        raise RuntimeError("conversion failed")
    assert metric.audio_seconds.item() == 1.0  # the failed block was not added


def test_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        real_time_factor(1.0, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        RealTimeFactor().update(-1.0, 1.0)
