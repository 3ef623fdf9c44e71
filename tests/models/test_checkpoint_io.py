"""Reading RVC's file layouts, exporting RVC's inference format, and strict key checks."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.models import (
    build_synthesizer,
    export_rvc_model,
    load_rvc_checkpoint,
    load_state_strict,
)
from rvc_lora.models.checkpoint import _match_preset, load_rvc_discriminator
from rvc_lora.models.discriminator import build_discriminator
from rvc_lora.models.presets import PRESETS
from rvc_lora.utils.errors import CheckpointError
from tests.conftest import synth_inputs


def _fp16_exact(model: torch.nn.Module) -> torch.nn.Module:
    """Round every parameter to fp16 and back, so an fp16 file can hold the model exactly."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def _infer(model, seed: int = 7) -> torch.Tensor:
    phone, lengths, pitch, pitchf, sid = synth_inputs(model.config, model.f0, frames=30)
    torch.manual_seed(seed)  # same prior and excitation noise for both models
    return model.infer(phone, lengths, pitch, pitchf, sid)[0]


@pytest.mark.parametrize("f0", [True, False])
def test_pretrained_base_layout_loads(tmp_path, f0: bool) -> None:
    model = build_synthesizer("tiny", f0)
    state = {k: v.half() for k, v in model.state_dict().items()}
    path = tmp_path / ("f0G16k.pth" if f0 else "G16k.pth")
    torch.save({"model": state}, path)
    loaded = load_rvc_checkpoint(path)
    assert (loaded.kind, loaded.preset, loaded.f0, loaded.version, loaded.sr) == (
        "pretrained",
        "tiny",
        f0,
        "v1",
        16000,
    )
    assert loaded.model.enc_q is not None  # kept for training
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, state[k].float()), k


def test_full_size_v2_40k_pretrained_file_is_recognised(tmp_path) -> None:
    model = build_synthesizer("v2_40k", True)
    path = tmp_path / "f0G40k.pth"
    torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}}, path)
    loaded = load_rvc_checkpoint(path)
    assert (loaded.preset, loaded.sr, loaded.f0, loaded.version) == ("v2_40k", 40000, True, "v2")
    assert loaded.config.spk_embed_dim == 109


def test_every_variant_is_identified_by_shapes_alone() -> None:
    for name in PRESETS:
        for f0 in (True, False):
            with torch.device("meta"):
                state = build_synthesizer(name, f0).state_dict()
            found, config, found_f0 = _match_preset(state, "x.pth")
            assert (found, found_f0) == (name, f0)


def test_export_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = _fp16_exact(build_synthesizer("tiny", True)).eval()
    path = export_rvc_model(model, tmp_path / "voice.pth", info="100epoch")
    loaded = load_rvc_checkpoint(path)
    assert loaded.kind == "inference" and loaded.model.enc_q is None
    assert loaded.info == "100epoch" and loaded.preset == "tiny"
    assert torch.equal(_infer(model), _infer(loaded.model))
    # And a second export of the loaded model is the same file content.
    again = torch.load(export_rvc_model(loaded.model, tmp_path / "again.pth"), weights_only=True)
    first = torch.load(path, weights_only=True)
    assert list(again["weight"]) == list(first["weight"])
    assert all(torch.equal(again["weight"][k], first["weight"][k]) for k in first["weight"])


def test_export_has_rvc_layout(tmp_path) -> None:
    with torch.device("meta"):
        reference = build_synthesizer("v2_40k", True).state_dict()
    model = build_synthesizer("v2_40k", True)
    cpt = torch.load(export_rvc_model(model, tmp_path / "v.pth"), weights_only=True)
    assert list(cpt) == ["weight", "config", "info", "sr", "f0", "version"]
    assert list(cpt["weight"]) == [k for k in reference if not k.startswith("enc_q.")]
    assert len(cpt["weight"]) == 457
    assert all(v.dtype == torch.float16 for v in cpt["weight"].values())
    assert cpt["config"] == [
        1025,
        32,
        192,
        192,
        768,
        2,
        6,
        3,
        0.0,
        "1",
        [3, 7, 11],
        [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        [10, 10, 2, 2],
        512,
        [16, 16, 4, 4],
        109,
        256,
        40000,
    ]
    assert (cpt["sr"], cpt["f0"], cpt["version"]) == ("40k", 1, "v2")


def test_inference_layout_written_by_rvc_conventions_loads(tmp_path) -> None:
    """An old v1-era export: no 'version'/'f0' fields, sr as a string in config[-1], and a
    speaker table whose size differs from config[-3]."""
    model = build_synthesizer(PRESETS["tiny"].replace(spk_embed_dim=3), True)
    weight = {k: v.half() for k, v in model.state_dict().items() if not k.startswith("enc_q.")}
    config = model.config.to_rvc_list()
    config[-1], config[-3] = "16k", 109
    torch.save({"weight": weight, "config": config, "info": "old"}, tmp_path / "old.pth")
    loaded = load_rvc_checkpoint(tmp_path / "old.pth")
    assert (loaded.version, loaded.f0, loaded.sr) == ("v1", True, 16000)
    assert loaded.config.spk_embed_dim == 3


def test_export_refuses_foreign_keys(tmp_path) -> None:
    model = build_synthesizer("tiny")
    model.dec.extra = torch.nn.Linear(2, 2)  # e.g. an unmerged adapter
    with pytest.raises(CheckpointError, match="merge and unload"):
        export_rvc_model(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_strict_load_lists_missing_unexpected_and_misshaped_keys() -> None:
    model = build_synthesizer("tiny")
    state = model.state_dict()
    del state["dec.conv_post.weight"]
    state["dec.bogus"] = torch.zeros(1)
    state["emb_g.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError) as err:
        load_state_strict(build_synthesizer("tiny"), state, source="m.pth")
    msg = str(err.value)
    assert msg.startswith("m.pth: ")
    assert "missing 1 (dec.conv_post.weight)" in msg
    assert "unexpected 1 (dec.bogus)" in msg
    tiny = PRESETS["tiny"]
    assert f"emb_g.weight (5, 3)!=({tiny.spk_embed_dim}, {tiny.gin_channels})" in msg
    assert "\n" not in msg


def test_known_subset_may_be_missing() -> None:
    model = build_synthesizer("tiny")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("enc_q.")}
    target = build_synthesizer("tiny")
    with pytest.raises(CheckpointError, match="missing"):
        load_state_strict(target, state)
    load_state_strict(target, state, allow_missing=("enc_q.",))
    assert torch.equal(target.dec.conv_post.weight, model.dec.conv_post.weight)


def test_unknown_shapes_are_refused_with_closest_preset(tmp_path) -> None:
    state = build_synthesizer("tiny").state_dict()
    state["enc_p.proj.weight"] = torch.zeros(64, 32, 3)
    torch.save({"model": state}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="closest is tiny"):
        load_rvc_checkpoint(tmp_path / "odd.pth")


def test_discriminator_file_loads(tmp_path) -> None:
    disc = build_discriminator("tiny")
    torch.save({"model": {k: v.half() for k, v in disc.state_dict().items()}}, tmp_path / "D.pth")
    loaded = load_rvc_discriminator(tmp_path / "D.pth")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, disc.state_dict()[k].half().float())
    with pytest.raises(CheckpointError, match="discriminator"):
        load_rvc_checkpoint(tmp_path / "D.pth")
