"""Slicing measures level relative to the file: clean speech recorded quietly (-60 dBFS) slices
as the same recording at a normal level; silence, digital or at dither level, is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_lora.audio import AudioError
from rvc_lora.data.preprocess import PrepSettings, slice_recording
from rvc_lora.utils.cli import CONFIG_DIR

DEMO = Path(CONFIG_DIR).parent / "data" / "demo" / "target" / "slt"


def _two_sentences() -> np.ndarray:
    """Two demo sentences with a pause between them: a recording that slices in two."""
    a, sr = sf.read(DEMO / "s03.flac", dtype="float32")
    b, _ = sf.read(DEMO / "s06.flac", dtype="float32")
    assert sr == 16000
    return np.concatenate([a, np.zeros(sr, np.float32), b])


def test_quiet_clean_speech_slices_like_the_loud_recording(tmp_path) -> None:
    y = _two_sentences()
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    sf.write(loud, y, 16000, subtype="FLOAT")
    sf.write(quiet, y * (0.001 / np.abs(y).max()), 16000, subtype="FLOAT")  # peak -60 dBFS
    prep = PrepSettings(sr=16000)
    a, b = slice_recording(loud, prep), slice_recording(quiet, prep)
    assert [(s.start, s.end, s.segment) for s in a] == [(s.start, s.end, s.segment) for s in b]
    assert {s.segment for s in a} == {0, 1}  # the pause splits it
    for x, z in zip(a, b):
        # Each slice is peak-normalised, and RVC's normalisation is a per-slice gain.
        np.testing.assert_allclose(
            x.wav / np.abs(x.wav).max(), z.wav / np.abs(z.wav).max(), atol=1e-5
        )
    # RVC's absolute threshold (-42 dB below full scale) calls the quiet take silence.
    with pytest.raises(AudioError, match="only silence"):
        slice_recording(quiet, PrepSettings(sr=16000, slicer_level="full_scale"))


@pytest.mark.parametrize(("peak", "level"), [(0.0, "digital silence"), (2e-4, "peak -74.0 dBFS")])
def test_silence_and_dither_level_noise_are_refused_naming_the_file(tmp_path, peak, level) -> None:
    noise = np.random.default_rng(0).uniform(-1, 1, 16000 * 2).astype(np.float32)
    path = tmp_path / "room tone.wav"
    sf.write(
        path, noise * peak / np.abs(noise).max() if peak else noise * 0, 16000, subtype="FLOAT"
    )
    with pytest.raises(AudioError) as info:
        slice_recording(path, PrepSettings(sr=16000, highpass=False))
    message = str(info.value)
    assert message.startswith(f"{path}: only silence ({level};") and "\n" not in message


def test_slice_spans_locate_each_slice_in_the_recording(tmp_path) -> None:
    """The spans (used to keep validation audio out of training) point at the slice's audio."""
    from rvc_lora.data.audio import highpass

    y = _two_sentences()
    path = tmp_path / "take.wav"
    sf.write(path, y, 16000, subtype="FLOAT")
    filtered = highpass(y, 16000)
    for s in slice_recording(path, PrepSettings(sr=16000)):
        part = filtered[s.start : s.end]
        np.testing.assert_allclose(
            s.wav / np.abs(s.wav).max(), part / np.abs(part).max(), atol=1e-5
        )


def test_unknown_slicer_level_is_refused() -> None:
    with pytest.raises(ValueError, match="slicer_level='dbfs': use 'peak' or 'full_scale'"):
        PrepSettings(sr=16000, slicer_level="dbfs")
