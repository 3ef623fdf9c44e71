"""An exported ONNX voice computes what the PyTorch model computes, from the same noise.

Every preset family (v1/v2, with and without F0, 32/40/48 kHz, tiny) is exported with its real
structure (feature width, upsampling rates and kernels, resblocks, sample rate) and narrow
channels, so the graph is the full one and the test is quick; then run at two lengths and three
batch sizes other than the trace's (dynamic axes really dynamic).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rvc_lora.inference.onnx_export import export_onnx
from rvc_lora.inference.onnx_voice import OnnxVoice
from rvc_lora.lora import LoraConfig, disable_lora, inject_lora
from rvc_lora.models import PRESETS, build_synthesizer
from rvc_lora.models.synthesizer import InferNoise, Synthesizer, draw_infer_noise
from tests.lora.tiny import randomize_adapter

pytest.importorskip("onnxruntime", reason="the onnx extra is part of .[dev]")

RTOL = 1e-4  # of the reference's peak: fp32 onnxruntime vs fp32 PyTorch
FAMILIES = [(p, f0) for p in PRESETS for f0 in (True, False)]


def _narrow(preset: str):
    c = PRESETS[preset]
    if preset == "tiny":
        return c
    return dataclasses.replace(
        c, inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=2,
        upsample_initial_channel=64, gin_channels=16,
    )  # fmt: skip


def _inputs(model, lengths: list[int], seed: int):
    """Batch of len(lengths) items padded to the longest, plus noise drawn for it."""
    g = torch.Generator().manual_seed(seed)
    c, b, t = model.config, len(lengths), max(lengths)
    phone = torch.randn(b, t, c.feature_dim, generator=g)
    pitch = torch.randint(1, 256, (b, t), generator=g) if model.f0 else None
    pitchf = torch.rand(b, t, generator=g) * 300 + 80 if model.f0 else None
    if pitchf is not None:
        pitchf[:, : t // 4] = 0.0  # unvoiced frames: the noise branch of the source
    sid = torch.arange(b) % c.spk_embed_dim
    noise = draw_infer_noise(model, b, t, generator=g)
    return phone, torch.tensor(lengths), pitch, pitchf, sid, noise


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape
    return float((out - ref).abs().max() / ref.abs().max())


def _assert_same(voice: OnnxVoice, model: Synthesizer, lengths: list[int], seed: int) -> None:
    phone, lens, pitch, pitchf, sid, noise = _inputs(model, lengths, seed)
    ref = model.infer(phone, lens, pitch, pitchf, sid, noise=noise)[0]
    out = voice.infer(phone, lens, pitch, pitchf, sid, noise=noise)[0]
    assert out.shape == (len(lengths), 1, max(lengths) * model.config.hop_length)
    assert _rel_err(out, ref) <= RTOL


@pytest.mark.parametrize(("preset", "f0"), FAMILIES, ids=lambda v: str(v))
def test_every_family_matches_pytorch_at_two_lengths_and_any_batch(preset, f0, tmp_path):
    torch.manual_seed(0)
    model = Synthesizer(_narrow(preset), f0=f0).eval()
    voice = OnnxVoice(export_onnx(model, tmp_path / "voice.onnx"))
    assert (voice.f0, voice.config.sr, voice.config.version) == (f0, model.sr, model.version)
    assert voice.config.upsample_rates == model.config.upsample_rates
    # Traced at 2 x 64 frames; here 1, 2 and 3 rows, 9..130 frames, rows of unequal length.
    _assert_same(voice, model, [37], seed=1)
    _assert_same(voice, model, [130, 97, 9], seed=2)
    _assert_same(voice, model, [9, 9], seed=3)


def test_onnx_infer_draws_the_noise_pytorch_draws(tmp_path):
    """Unseeded calls under the same RNG state give the same audio (backend=onnx relies on it)."""
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    voice = OnnxVoice(export_onnx(model, tmp_path / "voice.onnx"))
    phone, lens, pitch, pitchf, sid, _ = _inputs(model, [50], seed=4)
    torch.manual_seed(7)
    ref = model.infer(phone, lens, pitch, pitchf, sid)[0]
    torch.manual_seed(7)
    out = voice.infer(phone, lens, pitch, pitchf, sid)[0]
    assert _rel_err(out, ref) <= RTOL
    # crop drops whole frames of output, as the PyTorch crop does.
    torch.manual_seed(7)
    cropped = voice.infer(phone, lens, pitch, pitchf, sid, crop=(5, 3))[0]
    hop = model.config.hop_length
    assert torch.equal(cropped, out[..., 5 * hop : 47 * hop])


@pytest.mark.parametrize(
    "lora",
    [
        dict(preset="decoder", rank=4),  # Conv1d (dilated) and ConvTranspose1d under weight norm
        dict(preset="all", rank=2, use_dora=True),  # + Linear, attention and flow convs, DoRA
    ],
    ids=["decoder", "all-dora"],
)
def test_merged_lora_voice_equals_the_unmerged_adapter(lora, tmp_path):
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    inject_lora(model, LoraConfig(**lora))
    randomize_adapter(model, relative=0.3)
    voice = OnnxVoice(export_onnx(model, tmp_path / "voice.onnx"))
    for lengths, seed in (([41], 5), ([88, 60], 6)):
        _assert_same(voice, model, lengths, seed)  # model: adapter unmerged, weight norm live
    # The file holds the adapter: without it the PyTorch model is far from the file's output.
    phone, lens, pitch, pitchf, sid, noise = _inputs(model, [41], 5)
    with disable_lora(model):
        base = model.infer(phone, lens, pitch, pitchf, sid, noise=noise)[0]
    assert _rel_err(voice.infer(phone, lens, pitch, pitchf, sid, noise=noise)[0], base) > 100 * RTOL


def test_export_leaves_the_model_as_it_was(tmp_path):
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    inject_lora(model, LoraConfig(preset="decoder", rank=4))
    randomize_adapter(model, relative=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "voice.onnx")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.enc_q is not None  # the copy lost its posterior encoder, not the model


def test_noise_of_the_wrong_shape_is_refused():
    model = build_synthesizer("tiny").eval()
    phone, lens, pitch, pitchf, sid, noise = _inputs(model, [20], seed=0)
    short = InferNoise(noise.prior[..., :-1], noise.source)
    with pytest.raises(ValueError, match="prior noise: expected shape"):
        model.infer(phone, lens, pitch, pitchf, sid, noise=short)
    short = InferNoise(noise.prior, noise.source[:, :-1])
    with pytest.raises(ValueError, match="source noise: expected shape"):
        model.infer(phone, lens, pitch, pitchf, sid, noise=short)


def test_drawn_noise_reproduces_the_unseeded_pytorch_output():
    model = build_synthesizer("tiny").eval()
    phone, lens, pitch, pitchf, sid, _ = _inputs(model, [30], seed=0)
    torch.manual_seed(3)
    ref = model.infer(phone, lens, pitch, pitchf, sid)[0]
    torch.manual_seed(3)
    noise = draw_infer_noise(model, 1, 30)
    assert torch.equal(model.infer(phone, lens, pitch, pitchf, sid, noise=noise)[0], ref)
    other = draw_infer_noise(model, 1, 30)
    assert not np.allclose(model.infer(phone, lens, pitch, pitchf, sid, noise=other)[0], ref)
