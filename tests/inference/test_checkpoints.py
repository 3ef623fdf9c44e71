"""load_voice_model on the tiny preset: every accepted kind computes like the model it came from;
wrong kinds and missing bases fail with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rvc_lora.inference.checkpoints import load_voice_model
from rvc_lora.lora import LoraConfig, inject_lora, save_adapter, trainable_parameters
from rvc_lora.models import build_discriminator, build_synthesizer, export_rvc_model, get_preset
from rvc_lora.training.module import VoiceConversionModule
from rvc_lora.utils.errors import CheckpointError
from tests.conftest import synth_inputs
from tests.lora.tiny import randomize_adapter

TINY = get_preset("tiny")
INPUTS = synth_inputs(TINY, f0=True, frames=16)
LORA = LoraConfig(preset="decoder", rank=4, alpha=8)


def make_gen(seed: int = 0):
    """The training generator (with enc_q), in train-ready state as from a pretrained file."""
    torch.manual_seed(seed)
    return build_synthesizer("tiny", f0=True)


def infer(model) -> torch.Tensor:
    torch.manual_seed(123)
    return model.eval().infer(*INPUTS)[0]


def save_base(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": make_gen(seed).state_dict()}, path)  # RVC pretrained layout
    return path


def trained_adapter(path: Path, seed: int = 0) -> tuple[Path, torch.Tensor]:
    """An adapter on base ``seed`` and the output of the model it was saved from."""
    model = make_gen(seed)
    inject_lora(model, LORA)
    randomize_adapter(model, seed=5, relative=0.05)
    with torch.no_grad():
        model.emb_g.weight.add_(0.3)
        for p in trainable_parameters(model).values():  # the file is fp16: make them exact
            p.copy_(p.half().float())
    return save_adapter(model, path), infer(model)


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


def test_rvc_export_and_pretrained_pth(tmp_path) -> None:
    model = make_gen()
    with torch.no_grad():  # fp16-exact weights: the export (fp16) then loads bit-identical
        for p in model.parameters():
            p.copy_(p.half().float())
    model.remove_posterior()
    export_rvc_model(model, tmp_path / "voice.pth")
    loaded, info = load_voice_model(tmp_path / "voice.pth")
    assert torch.equal(infer(loaded), infer(model))
    assert info == {
        "kind": "rvc",
        "version": "v1",
        "sr": 16000,
        "f0": True,
        "preset": "tiny",
        "lora_targets": [],
        "base": None,
    }
    assert loaded.enc_q is None and not loaded.training
    base_loaded, info = load_voice_model(save_base(tmp_path / "G_0.pth"))
    assert base_loaded.enc_q is None and info["kind"] == "rvc"
    assert torch.equal(infer(base_loaded), infer(make_gen()))


def test_adapter_with_base_next_to_it_or_given(tmp_path) -> None:
    run = tmp_path / "run"
    path, expected = trained_adapter(run / "adapter.safetensors")
    save_base(run / "base.pth")
    model, info = load_voice_model(path)
    assert torch.equal(infer(model), expected)
    assert info["kind"] == "adapter" and info["preset"] == "tiny"
    assert info["lora_targets"] and all(t.startswith("dec.") for t in info["lora_targets"])
    assert Path(info["base"]) == run / "base.pth"

    alone = tmp_path / "alone"
    path2, _ = trained_adapter(alone / "v.safetensors")
    model, info = load_voice_model(path2, pretrained_g=run / "base.pth")
    assert torch.equal(infer(model), expected)
    with pytest.raises(CheckpointError, match="pretrained_g=") as err:
        load_voice_model(path2)  # no base.pth, no run config
    one_line(err)


def _hydra_run(root: Path, pretrained_g: str, runtime_cwd: Path | None) -> Path:
    run = root / "outputs" / "demo" / "2024-01-01" / "12-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "paths:\n  root_dir: ${hydra:runtime.cwd}\n  models_dir: ${paths.root_dir}/models\n"
        "  output_dir: ${hydra:runtime.output_dir}\n"
        f"model:\n  preset: tiny\n  f0: true\n  pretrained_g: {pretrained_g}\n"
    )
    if runtime_cwd is not None:
        (run / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  runtime:\n    cwd: {runtime_cwd}\n    output_dir: {run}\n"
        )
    return run


def test_adapter_base_from_the_run_config(tmp_path) -> None:
    save_base(tmp_path / "proj" / "models" / "g.pth")
    # Interpolated through ${hydra:runtime.cwd}, resolved from hydra.yaml.
    run = _hydra_run(tmp_path / "proj", "${paths.models_dir}/g.pth", tmp_path / "proj")
    path, expected = trained_adapter(run / "adapter.safetensors")
    model, info = load_voice_model(path)
    assert torch.equal(infer(model), expected)
    assert Path(info["base"]) == tmp_path / "proj" / "models" / "g.pth"
    # Relative, no hydra.yaml: found under a parent of the run dir.
    run2 = _hydra_run(tmp_path / "proj2", "../proj/models/g.pth", None)
    path2, _ = trained_adapter(run2 / "adapter.safetensors")
    assert torch.equal(infer(load_voice_model(path2)[0]), expected)
    # Recorded but absent; recorded as null.
    run3 = _hydra_run(tmp_path / "proj3", "models/missing.pth", None)
    path3, _ = trained_adapter(run3 / "adapter.safetensors")
    with pytest.raises(CheckpointError, match="not found.*pretrained_g=") as err:
        load_voice_model(path3)
    one_line(err)
    run4 = _hydra_run(tmp_path / "proj4", "null", None)
    path4, _ = trained_adapter(run4 / "adapter.safetensors")
    with pytest.raises(CheckpointError, match="null.*pretrained_g=") as err:
        load_voice_model(path4)
    one_line(err)


def test_adapter_on_another_base_is_refused(tmp_path) -> None:
    path, _ = trained_adapter(tmp_path / "a.safetensors", seed=0)
    other = save_base(tmp_path / "other" / "g.pth", seed=1)
    with pytest.raises(CheckpointError, match="another base") as err:
        load_voice_model(path, pretrained_g=other)
    one_line(err)


def _lightning_ckpt(path: Path, lora: LoraConfig | None) -> torch.Tensor:
    """A checkpoint in VoiceConversionModule's layout (state_dict of trainables + rvc_lora)."""
    module = VoiceConversionModule(make_gen(), build_discriminator("tiny"), lora=lora)
    with torch.no_grad():
        if lora is not None:
            randomize_adapter(module.generator, seed=9, relative=0.05)
        else:
            for p in module.generator.dec.parameters():
                p.mul_(1.01)
        module.generator.emb_g.weight.add_(0.2)
    ckpt = {"epoch": 1, "global_step": 10, "state_dict": {}}
    module.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return infer(module.generator)


def test_lightning_checkpoints(tmp_path) -> None:
    run = tmp_path / "run"
    expected = _lightning_ckpt(run / "checkpoints" / "last.ckpt", LORA)
    with pytest.raises(CheckpointError, match="pretrained_g=") as err:
        load_voice_model(run / "checkpoints" / "last.ckpt")
    one_line(err)
    save_base(run / "base.pth")
    model, info = load_voice_model(run / "checkpoints" / "last.ckpt")
    assert torch.equal(infer(model), expected)
    assert info["kind"] == "lightning" and info["lora_targets"]
    with pytest.raises(CheckpointError, match="another base") as err:
        load_voice_model(
            run / "checkpoints" / "last.ckpt", pretrained_g=save_base(tmp_path / "o.pth", seed=1)
        )
    one_line(err)

    full = _lightning_ckpt(tmp_path / "full" / "checkpoints" / "x.ckpt", None)
    model, info = load_voice_model(tmp_path / "full" / "checkpoints" / "x.ckpt")  # no base needed
    assert torch.equal(infer(model), full)
    assert info["kind"] == "lightning" and info["lora_targets"] == [] and model.enc_q is None


def test_wrong_kinds_fail_in_one_line(tmp_path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CheckpointError) as err:
        load_voice_model(tmp_path / "x.txt")
    assert one_line(err).endswith(
        "x.txt: not a model checkpoint; pass an adapter .safetensors, a run's .ckpt or an RVC .pth"
    )
    torch.save({"model": build_discriminator("tiny").state_dict()}, tmp_path / "D.pth")
    optim = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))]).state_dict()
    torch.save(optim, tmp_path / "opt.pth")
    torch.save(optim, tmp_path / "opt.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    (tmp_path / "base.pth").write_bytes(b"")
    for name in ["D.pth", "opt.pth", "opt.ckpt", "bad.safetensors", "missing.pth"]:
        with pytest.raises(CheckpointError) as err:
            load_voice_model(tmp_path / name)
        assert name in one_line(err)
