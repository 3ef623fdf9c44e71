"""``pitch=auto``: the shift rule, the recorded voice median, and the pipeline using its own F0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.features.pitch import voiced_median_hz
from rvc_lora.inference import pipeline as pipeline_mod
from rvc_lora.inference.pipeline import ConversionError, ConversionPipeline, ConvertOptions
from rvc_lora.inference.pitch import (
    AutoPitchError,
    auto_pitch_shift,
    parse_pitch,
    recorded_voice_median,
    require_voice_median,
)
from rvc_lora.models import build_synthesizer

SR = 16000


def test_shift_is_rounded_semitones_clipped_to_two_octaves() -> None:
    assert auto_pitch_shift(200.0, 100.0) == 12
    assert auto_pitch_shift(100.0, 200.0) == -12
    assert auto_pitch_shift(150.0, 150.0) == 0
    assert auto_pitch_shift(110.0 * 2 ** (7.4 / 12), 110.0) == 7  # rounds to nearest
    assert auto_pitch_shift(110.0 * 2 ** (7.6 / 12), 110.0) == 8
    assert auto_pitch_shift(1000.0, 60.0) == 24 and auto_pitch_shift(60.0, 1000.0) == -24
    assert auto_pitch_shift(1000.0, 60.0, limit=12) == 12
    with pytest.raises(ValueError, match="source median"):
        auto_pitch_shift(200.0, 0.0)


def test_voiced_median_ignores_unvoiced_and_nonfinite_frames() -> None:
    assert voiced_median_hz(np.array([0, 100, 0, 300, 200, np.nan, -5.0])) == 200.0
    assert voiced_median_hz([np.array([100.0, 0.0]), np.array([110.0, 120.0])]) == 110.0
    assert voiced_median_hz(np.zeros(10)) is None
    assert voiced_median_hz([]) is None


def test_recorded_median_is_read_from_the_run_dir(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    adapter, ckpt = run / "adapter.safetensors", run / "checkpoints" / "last.ckpt"
    (run / "run_info.json").write_text(json.dumps({"mode": "lora"}))
    assert recorded_voice_median(adapter) is None  # a run from before the key existed
    with pytest.raises(AutoPitchError) as err:
        require_voice_median(adapter)
    assert "\n" not in str(err.value) and "pitch=N" in str(err.value)
    (run / "run_info.json").write_text(json.dumps({"voice_f0_median_hz": 181.5}))
    assert recorded_voice_median(adapter) == 181.5 == recorded_voice_median(ckpt)
    assert require_voice_median(ckpt) == 181.5
    with pytest.raises(AutoPitchError, match="RVC .pth"):
        require_voice_median(tmp_path / "models" / "voice.pth")


def test_parse_pitch() -> None:
    assert parse_pitch("auto") == "auto" and parse_pitch(" AUTO ") == "auto"
    assert parse_pitch(12) == 12.0 and parse_pitch(-3.5) == -3.5 and parse_pitch("7") == 7.0
    for bad in ("high", True, None):
        with pytest.raises(AutoPitchError, match="semitones"):
            parse_pitch(bad)


def tone(f0: float, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> ConversionPipeline:
    path = write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "h.pt")
    return ConversionPipeline(load_content_encoder(path))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_synthesizer("tiny").eval()


def test_pipeline_auto_pitch_uses_the_f0_it_computes(pipe, model, monkeypatch) -> None:
    calls = []
    real = pipeline_mod.compute_f0

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_mod, "compute_f0", counting)
    opts = ConvertOptions(f0_method="pm", auto_pitch_hz=220.0)
    pipe.convert(model, tone(110.0), opts)
    assert calls == ["pm"]  # one F0 track per conversion, shift included
    assert pipe.last_pitch == 12.0
    pipe.convert(model, tone(110.0), ConvertOptions(f0_method="pm", pitch=-3))
    assert pipe.last_pitch == -3.0
    pipe.convert(model, tone(110.0), ConvertOptions(f0_method="pm", auto_pitch_hz=5000.0))
    assert pipe.last_pitch == 24.0  # clipped
    silent = np.zeros(SR, np.float32) + 1e-4 * np.random.default_rng(0).standard_normal(SR)
    pipe.convert(model, silent.astype(np.float32), opts)
    assert pipe.last_pitch == 0.0  # no voiced frame: no transposition
    with pytest.raises(ConversionError, match="auto_pitch_hz"):
        ConvertOptions(auto_pitch_hz=-1.0)
