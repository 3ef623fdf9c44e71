"""The fast conversion path (inference mode, fast decoder, cropped chunk padding) against the
pre-issue-17 path (``fast=False``: no_grad, the decoder module, full chunks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions
from rvc_lora.lora import LoraConfig, inject_lora, lora_layers
from rvc_lora.models import build_synthesizer
from rvc_lora.models import synthesizer as synth_module

SR = 16000
OPTS = ConvertOptions(f0_method="pm", seed=3)
SMALL = dict(x_pad=1, x_query=1, x_center=3, x_max=4)  # 3 chunks for 7 s of audio


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding tone in bursts (voiced) between near-silent gaps (unvoiced), plus low noise."""
    t = np.arange(int(seconds * SR)) / SR
    f = 160 + 50 * np.sin(2 * np.pi * 0.4 * t)
    on = (t % 1.5) > 0.5
    noise = 0.003 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / SR) * on + noise).astype(np.float32)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_content_encoder(
        write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "h.pt")
    )


def tiny(f0: bool = True, lora: bool = False):
    torch.manual_seed(0)
    model = build_synthesizer("tiny", f0=f0).eval()
    if lora:  # an unmerged adapter whose B is not zero
        inject_lora(model, LoraConfig(preset="decoder", rank=4))
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.05)
        model.eval()
    return model


def convert_both(encoder, model, audio, **chunking):
    new = ConversionPipeline(encoder, **chunking).convert(model, audio, OPTS)
    old = ConversionPipeline(encoder, fast=False, **chunking).convert(model, audio, OPTS)
    return new, old


@pytest.mark.parametrize(
    ("f0", "lora", "seconds", "chunking"),
    [(True, False, 2.0, {}), (False, False, 2.0, {}), (True, True, 2.0, {}),
     (True, False, 7.3, SMALL)],
    ids=["nsf", "nono", "nsf-lora-unmerged", "nsf-3-chunks"],
)  # fmt: skip
def test_fast_output_equals_the_pre_change_path(encoder, f0, lora, seconds, chunking):
    (new, sr_new), (old, sr_old) = convert_both(
        encoder, tiny(f0, lora), voice_like(seconds), **chunking
    )
    assert sr_new == sr_old and new.dtype == old.dtype == np.float32
    assert new.shape == old.shape and len(new) > SR
    assert np.abs(old).max() > 0.05  # not silence: the comparison means something
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-4)


def test_chunks_are_decoded_cropped_in_inference_mode(encoder, monkeypatch):
    """Every chunk's decode skips x_pad seconds each side (100 frames), under inference mode,
    and the caller's autograd state is left as it was."""
    calls = []
    real = synth_module.decode_fast

    def spy(dec, x, f0=None, g=None, n_res=None, crop=None, **noise):
        calls.append((crop, torch.is_inference_mode_enabled(), x.shape[-1]))
        return real(dec, x, f0, g, n_res=n_res, crop=crop, **noise)

    monkeypatch.setattr(synth_module, "decode_fast", spy)
    ConversionPipeline(encoder, **SMALL).convert(tiny(), voice_like(7.3), OPTS)
    assert len(calls) == 3
    assert all(crop == (100, 100) and inference for crop, inference, _ in calls)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    calls.clear()
    ConversionPipeline(encoder, fast=False, **SMALL).convert(tiny(), voice_like(7.3), OPTS)
    assert calls == []  # the reference path runs the decoder module


def test_synthesize_leaves_the_dropped_padding_unsynthesized(encoder):
    model = tiny()
    fast, ref = ConversionPipeline(encoder), ConversionPipeline(encoder, fast=False)
    t, hop = 260, model.config.hop_length
    gen = torch.Generator().manual_seed(2)
    phone = torch.randn(1, t, model.config.feature_dim, generator=gen)
    pitchf = torch.rand(1, t, generator=gen) * 200 + 100
    pitch = torch.randint(1, 255, (1, t), generator=gen)
    args = (model, phone, torch.tensor([t]), pitch, pitchf, torch.tensor([0]))

    def run(pipe):
        torch.manual_seed(4)
        with torch.inference_mode():
            return pipe._synthesize(*args)

    a, b = run(fast), run(ref)
    pad = 100 * hop  # x_pad = 1 s
    assert a.shape == b.shape == (t * hop,)
    assert not a[:pad].any() and not a[-pad:].any()
    np.testing.assert_allclose(a[pad:-pad], b[pad:-pad], rtol=0, atol=1e-5)
