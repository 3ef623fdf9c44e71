"""The presets on the real synthesizer classes at tiny sizes."""

from __future__ import annotations

import re

import pytest
import torch

from rvc_lora.lora import (
    LoraConfig,
    base_identity,
    inject_lora,
    load_adapter,
    merge_lora,
    save_adapter,
    trainable_parameters,
    unload_lora,
)
from rvc_lora.models import build_synthesizer
from rvc_lora.utils.errors import CheckpointError
from tests.conftest import synth_inputs
from tests.lora.tiny import randomize_adapter, rel_err

PRESET_NAMES = ["decoder", "decoder_flow", "all"]
SPEAKER = [r"emb_g\.weight"]


def _infer(model, inputs):
    torch.manual_seed(0)  # infer draws the prior's noise
    phone, lengths, pitch, pitchf, sid = inputs
    return model.infer(phone, lengths, pitch, pitchf, sid)[0]


def _expected_count(model, preset):
    dec = model.dec
    n = len(dec.ups) + sum(len(rb.convs1) + len(rb.convs2) for rb in dec.resblocks)
    if preset != "decoder":
        n += sum(2 * len(f.enc.in_layers) for f in model.flow.flows if hasattr(f, "enc"))
    if preset == "all":
        n += 6 * len(model.enc_p.encoder.attn_layers)
    return n


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_identity_merge_and_unload(preset):
    model = build_synthesizer("tiny").eval()
    base_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    inputs = synth_inputs(model.config, True)
    y_base = _infer(model, inputs)
    ident = base_identity(model, exclude=SPEAKER)
    cfg = LoraConfig(preset=preset)
    names = inject_lora(model, cfg)
    assert len(names) == _expected_count(model, preset)
    assert all(any(re.fullmatch(p, n) for n in names) for p in cfg.targets)
    assert torch.equal(_infer(model, inputs), y_base)
    assert base_identity(model) == ident
    randomize_adapter(model, relative=0.2)
    y_lora = _infer(model, inputs)
    assert rel_err(y_lora, y_base) > 1e-3
    merge_lora(model)
    assert rel_err(_infer(model, inputs), y_lora) <= 1e-5
    unload_lora(model, merge=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == base_shapes


def _build(seed: int = 0):
    torch.manual_seed(seed)  # the same seed builds the same base
    return build_synthesizer("tiny")


def test_adapter_round_trip_and_gradients_on_tiny(tmp_path):
    model = _build()
    inject_lora(model, LoraConfig(preset="decoder_flow", rank=4))
    randomize_adapter(model, relative=0.2)
    # Gradients reach every decoder adapter tensor through the weight-normed convs.
    z = torch.randn(2, model.config.inter_channels, 12)
    f0 = torch.full((2, 12), 150.0)
    g = model.emb_g(torch.tensor([0, 1])).unsqueeze(-1)
    model.dec(z, f0, g).pow(2).mean().backward()
    dec_params = {k: p for k, p in trainable_parameters(model).items() if k.startswith("dec.")}
    assert len(dec_params) == 2 * _expected_count(model, "decoder")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec_params.values())
    path = save_adapter(model, tmp_path / "voice.safetensors", dtype=torch.float32)
    fresh = _build()
    load_adapter(fresh, path)  # injects from the file's config
    inputs = synth_inputs(model.config, True)
    assert torch.equal(_infer(fresh.eval(), inputs), _infer(model.eval(), inputs))
    with pytest.raises(CheckpointError, match="base"):
        load_adapter(_build(seed=1), path)
