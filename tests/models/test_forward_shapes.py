"""Output lengths of ``infer`` and the training ``forward`` for every preset."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.models import PRESETS, build_synthesizer
from tests.conftest import synth_inputs

VARIANTS = [(p, f0) for p in PRESETS for f0 in (True, False)]


@pytest.mark.parametrize(("preset", "f0"), VARIANTS, ids=lambda v: str(v))
def test_infer_and_forward_lengths(preset: str, f0: bool) -> None:
    model = build_synthesizer(preset, f0).eval()
    c = model.config
    frames = 2 * c.segment_size  # long enough for a training window
    phone, lengths, pitch, pitchf, sid = synth_inputs(c, f0, frames=frames)
    audio, x_mask, _ = model.infer(phone, lengths, pitch, pitchf, sid)
    assert audio.shape == (2, 1, frames * c.hop_length)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    # Padding frames beyond the shorter item's length are masked to silence.
    assert x_mask[1, 0, int(lengths[1]) :].sum() == 0

    spec = torch.rand(2, c.spec_channels, frames)
    model.train()
    out, ids, *_ = model(phone, lengths, pitch, pitchf, spec, lengths, sid)
    assert out.shape == (2, 1, c.segment_size * c.hop_length)
    assert ((ids >= 0) & (ids + c.segment_size <= lengths)).all()


def test_streaming_infer_crops_to_return_length() -> None:
    model = build_synthesizer("tiny").eval()
    c = model.config
    phone, lengths, pitch, pitchf, sid = synth_inputs(c, True, frames=80, batch=1)
    audio, *_ = model.infer(phone, lengths, pitch, pitchf, sid, skip_head=40, return_length=30)
    assert audio.shape[-1] == 30 * c.hop_length
    audio2, *_ = model.infer(phone, lengths, pitch, pitchf, sid, return_length2=100)
    assert audio2.shape[-1] == 100 * c.hop_length


def test_f0_model_requires_pitch() -> None:
    model = build_synthesizer("tiny", f0=True).eval()
    phone, lengths, *_ = synth_inputs(model.config, True)
    with pytest.raises(ValueError, match="pitch"):
        model.infer(phone, lengths, None, None)
