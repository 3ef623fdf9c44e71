"""The silence slicer cuts long pauses, keeps short ones, and trims silence to the limit."""

from __future__ import annotations

import numpy as np

from rvc_lora.data.slicer import SlicerConfig, slice_audio
from rvc_lora.data.synthetic import voiced


def _layout(sr: int, parts: list[tuple[str, float]]) -> np.ndarray:
    out = [
        voiced(sr, s, seed=i) if kind == "v" else np.zeros(int(sr * s), np.float32)
        for i, (kind, s) in enumerate(parts)
    ]
    return np.concatenate(out)


def test_long_pauses_split_and_short_pauses_stay() -> None:
    sr = 40000
    y = _layout(
        sr, [("s", 1.0), ("v", 2.0), ("s", 1.0), ("v", 2.0), ("s", 0.2), ("v", 1.0), ("s", 2.0)]
    )
    spans = [(a / sr, b / sr) for a, b in slice_audio(y, sr)]
    assert len(spans) == 2
    (a0, b0), (a1, b1) = spans
    # Each cut lies within the 0.5 s of silence allowed next to the speech.
    assert 0.5 <= a0 <= 1.0 and 3.0 <= b0 <= 3.5
    assert 3.5 <= a1 <= 4.0 and 7.2 <= b1 <= 7.7  # the 0.2 s pause stays inside


def test_pause_after_too_short_segment_is_not_cut() -> None:
    sr = 16000
    y = _layout(sr, [("v", 1.0), ("s", 0.6), ("v", 2.0)])  # first part under 1.5 s
    assert len(slice_audio(y, sr)) == 1


def test_pure_silence_and_quiet_noise_give_nothing() -> None:
    sr = 16000
    assert slice_audio(np.zeros(sr * 3, np.float32), sr) == []
    noise = (np.random.default_rng(0).standard_normal(sr * 3) * 1e-4).astype(np.float32)
    assert slice_audio(noise, sr) == []


def test_thresholds_are_configurable() -> None:
    sr = 16000
    y = _layout(sr, [("v", 2.0), ("s", 0.5), ("v", 2.0)])
    assert len(slice_audio(y, sr)) == 2
    assert len(slice_audio(y, sr, SlicerConfig(min_interval_ms=600))) == 1
