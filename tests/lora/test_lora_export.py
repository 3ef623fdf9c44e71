"""A merged adapter exports to RVC's format, and stock-format loading gives the same audio."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.lora import LoraConfig, inject_lora, merge_lora, unload_lora
from rvc_lora.models import build_synthesizer, export_rvc_model, load_rvc_checkpoint
from rvc_lora.utils.errors import CheckpointError
from tests.conftest import synth_inputs
from tests.lora.tiny import randomize_adapter, rel_err


def _infer(model, inputs) -> torch.Tensor:
    torch.manual_seed(3)
    phone, lengths, pitch, pitchf, sid = inputs
    return model.infer(phone, lengths, pitch, pitchf, sid)[0]


def test_merged_v2_40k_export_loads_back_with_identical_output(tmp_path) -> None:
    model = build_synthesizer("v2_40k").eval()
    with torch.device("meta"):
        rvc_keys = [
            k for k in build_synthesizer("v2_40k").state_dict() if not k.startswith("enc_q.")
        ]
    inject_lora(model, LoraConfig(preset="decoder", rank=8))
    randomize_adapter(model, relative=0.2)
    inputs = synth_inputs(model.config, True, frames=20, batch=1)
    y_adapter = _infer(model, inputs)
    merge_lora(model)
    plain = unload_lora(model, merge=True)
    y_merged = _infer(plain, inputs)
    assert rel_err(y_merged, y_adapter) <= 1e-5

    # The file is fp16: round the merged weights the same way, then outputs must be identical.
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(p.half().float())
    y_rounded = _infer(plain, inputs)
    path = export_rvc_model(plain, tmp_path / "voice.pth")
    cpt = torch.load(path, weights_only=True)
    assert list(cpt["weight"]) == rvc_keys
    loaded = load_rvc_checkpoint(path)
    assert loaded.preset == "v2_40k" and loaded.kind == "inference"
    assert torch.equal(_infer(loaded.model, inputs), y_rounded)
    assert rel_err(y_rounded, y_adapter) < 2e-2  # fp16 storage is the only difference


def test_export_of_unmerged_adapter_is_refused(tmp_path) -> None:
    model = build_synthesizer("tiny")
    inject_lora(model, LoraConfig(preset="decoder"))
    with pytest.raises(CheckpointError, match="merge and unload"):
        export_rvc_model(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
