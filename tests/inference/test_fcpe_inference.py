"""Conversion with ``f0_method=fcpe`` (and ``auto``): the pipeline, ``python infer.py`` and the
voice's recorded training method. A tiny FCPE checkpoint in the real file layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from rvc_lora.data.synthetic import phrases, voiced
from rvc_lora.features.f0 import compute_f0
from rvc_lora.features.fcpe import FCPE, FCPEConfig, FCPENet, checkpoint_dict, load_fcpe
from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.inference import pipeline as pipeline_module
from rvc_lora.inference.pipeline import ConversionError, ConversionPipeline, ConvertOptions
from rvc_lora.inference.run import run
from rvc_lora.models import build_synthesizer, export_rvc_model
from rvc_lora.utils.cli import CONFIG_DIR
from rvc_lora.utils.errors import CheckpointError


@pytest.fixture(scope="module")
def fcpe_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fcpe") / "fcpe_c_v001.pt"
    torch.save(checkpoint_dict(FCPENet(FCPEConfig(hidden=16, n_layers=2))), path)
    return path


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory) -> Path:
    return write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "h.pt")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_synthesizer("tiny").eval()


def test_pipeline_tracks_with_the_fcpe_it_holds(encoder_path, fcpe_path, model) -> None:
    fcpe = load_fcpe(fcpe_path)
    pipe = ConversionPipeline(load_content_encoder(encoder_path), fcpe=fcpe)
    audio_pad = voiced(16000, 1.2, f0=170).astype(np.float64)
    _, pitchf = pipe._pitch(model, audio_pad, ConvertOptions(f0_method="fcpe"))
    want = compute_f0(audio_pad, "fcpe", fcpe=fcpe, p_len=len(audio_pad) // 160)
    assert np.array_equal(pitchf[0].numpy(), want) and (want > 0).any()
    out, sr = pipe.convert(model, voiced(16000, 1.2, f0=170), ConvertOptions(f0_method="fcpe"))
    assert sr == 16000 and np.isfinite(out).all() and len(out) > 16000


def test_pipeline_without_fcpe_names_the_fix(encoder_path, model) -> None:
    pipe = ConversionPipeline(load_content_encoder(encoder_path))
    with pytest.raises(ConversionError, match=r"fcpe=load_fcpe\(path\).*rvc-lora download fcpe"):
        pipe.convert(model, voiced(16000, 1.0), ConvertOptions(f0_method="fcpe"))


# -- python infer.py -------------------------------------------------------------------------


def _cfg(**options):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="infer",
            return_hydra_config=True,
            overrides=[f"{k}={v}" for k, v in options.items()],
        )
    HydraConfig().set_config(cfg)
    return cfg


def _voice(folder: Path, encoder_path: Path, f0_method: str, recorded: str | None) -> Path:
    """An RVC .pth in a run dir whose config says ``f0_method`` (run_info.json: ``recorded``)."""
    folder.mkdir()
    torch.manual_seed(0)
    ckpt = export_rvc_model(build_synthesizer("tiny"), folder / "voice.pth")
    (folder / ".hydra").mkdir()
    features = {"encoder_path": str(encoder_path), "f0_method": f0_method}
    OmegaConf.save(OmegaConf.create({"features": features}), folder / ".hydra" / "config.yaml")
    if recorded is not None:
        (folder / "run_info.json").write_text(json.dumps({"f0_method": recorded}))
    return ckpt


@pytest.fixture
def methods(monkeypatch) -> list[str]:
    """The F0 methods the conversions call."""
    seen: list[str] = []
    real = pipeline_module.compute_f0

    def spy(x, method, **kw):
        seen.append(method)
        if method == "fcpe":
            assert isinstance(kw["fcpe"], FCPE)
        return real(x, method, **kw)

    monkeypatch.setattr(pipeline_module, "compute_f0", spy)
    return seen


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "s.wav"
    sf.write(path, phrases(16000, n=1, seconds=1.2, seed=3), 16000)
    return path


def test_infer_with_f0_method_fcpe(tmp_path, encoder_path, fcpe_path, source, methods) -> None:
    ckpt = _voice(tmp_path / "run", encoder_path, "pm", None)
    out = tmp_path / "out.wav"
    run(_cfg(ckpt=ckpt, source=source, output=out, f0_method="fcpe",
             **{"features.fcpe_path": fcpe_path}))  # fmt: skip
    assert methods == ["fcpe"] and sf.info(out).frames > 0


def test_infer_uses_the_method_the_voice_recorded(
    tmp_path, encoder_path, fcpe_path, source, methods
) -> None:
    # .hydra keeps "auto"; run_info.json says training resolved it to fcpe. An rmvpe file that
    # auto would pick now (a broken one: loading it fails) must not be looked at.
    ckpt = _voice(tmp_path / "run", encoder_path, "auto", "fcpe")
    rmvpe = tmp_path / "rmvpe.pt"
    rmvpe.write_bytes(b"not a checkpoint")
    overrides = {"features.fcpe_path": fcpe_path, "features.rmvpe_path": rmvpe}
    run(_cfg(ckpt=ckpt, source=source, output=tmp_path / "a.wav", **overrides))
    assert methods == ["fcpe"]


def test_infer_auto_resolves_to_fcpe_without_rmvpe(
    tmp_path, encoder_path, fcpe_path, source, methods
) -> None:
    ckpt = _voice(tmp_path / "run", encoder_path, "pm", None)
    overrides = {"features.fcpe_path": fcpe_path, "features.rmvpe_path": tmp_path / "absent.pt"}
    run(_cfg(ckpt=ckpt, source=source, output=tmp_path / "a.wav", f0_method="auto", **overrides))
    assert methods == ["fcpe"]


def test_infer_fcpe_without_weights_is_one_line(tmp_path, encoder_path, source) -> None:
    ckpt = _voice(tmp_path / "run", encoder_path, "pm", None)
    cfg = _cfg(ckpt=ckpt, source=source, output=tmp_path / "a.wav", f0_method="fcpe",
               **{"features.fcpe_path": tmp_path / "absent.pt"})  # fmt: skip
    with pytest.raises(CheckpointError, match="FCPE weights not found.*rvc-lora download fcpe"):
        run(cfg)
    assert not (tmp_path / "a.wav").exists()


def test_a_voice_without_pitch_needs_no_f0_weights_under_auto(
    tmp_path, encoder_path, source, methods
) -> None:
    """Fails if inference resolved ``auto`` (and so demanded RMVPE or FCPE weights) for a model
    that takes no F0 at all."""
    folder = tmp_path / "run"
    folder.mkdir()
    torch.manual_seed(0)
    ckpt = export_rvc_model(build_synthesizer("tiny", f0=False), folder / "voice.pth")
    (folder / ".hydra").mkdir()
    features = {"encoder_path": str(encoder_path), "f0_method": "auto"}
    OmegaConf.save(OmegaConf.create({"features": features}), folder / ".hydra" / "config.yaml")
    absent = {"features.fcpe_path": tmp_path / "no.pt", "features.rmvpe_path": tmp_path / "no2.pt"}
    out = tmp_path / "a.wav"
    run(_cfg(ckpt=ckpt, source=source, output=out, **absent))
    assert sf.info(out).frames > 0 and methods == []
