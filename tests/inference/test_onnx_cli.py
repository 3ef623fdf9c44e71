"""``infer.py mode=export_onnx`` and ``backend=onnx`` on the demo: the same conversion as the
PyTorch voice, what the file records, the validator, and one-line refusals of bad files."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from rvc_lora.features.index import build_index, save_index
from rvc_lora.inference import onnx_check
from rvc_lora.inference.onnx_voice import OnnxError, OnnxVoice
from rvc_lora.inference.pitch import MEDIAN_KEY, RUN_INFO
from rvc_lora.inference.run import run
from rvc_lora.lora import LoraConfig, inject_lora, read_adapter, save_adapter
from rvc_lora.models import load_rvc_checkpoint
from rvc_lora.utils.errors import RvcLoraError
from tests.inference.test_cli import REPO, _cfg
from tests.lora.tiny import randomize_adapter

BASE = REPO / "data" / "pretrained" / "tiny" / "f0G16k.pth"
ENCODER = REPO / "data" / "pretrained" / "hubert_tiny.pt"
SOURCE = REPO / "data" / "demo" / "eval" / "slt" / "s35.flac"


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    return demo_run(tmp_path_factory.mktemp("run"))


def demo_run(run_dir: Path) -> Path:
    """A demo voice as training leaves it: adapter on the shipped tiny base, the run's config
    (shipped encoder, pm F0), its run_info.json and a retrieval index."""
    model = load_rvc_checkpoint(BASE, keep_posterior=False).model
    inject_lora(model, LoraConfig(preset="decoder"))
    torch.manual_seed(0)
    randomize_adapter(model, relative=0.2)
    save_adapter(model, run_dir / "adapter.safetensors")
    (run_dir / ".hydra").mkdir()
    features = {"encoder_path": str(ENCODER), "f0_method": "pm"}
    config = {"model": {"preset": "tiny", "f0": True, "pretrained_g": str(BASE)}}
    OmegaConf.save(
        OmegaConf.create({**config, "features": features}), run_dir / ".hydra/config.yaml"
    )
    (run_dir / RUN_INFO).write_text(json.dumps({MEDIAN_KEY: 180.0, "f0_method": "pm"}))
    feats = np.random.default_rng(0).standard_normal((400, 256)).astype("f4")
    save_index(build_index(feats), run_dir / "added_IVF4_Flat_nprobe_1_v_v1.index")
    return run_dir / "adapter.safetensors"


@pytest.fixture(scope="module")
def exported(voice, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "voice.onnx"
    assert run(_cfg(mode="export_onnx", ckpt=voice, output=out)) == [out]
    return out


def _convert(tmp_path: Path, name: str, **options) -> np.ndarray:
    out = tmp_path / f"{name}.wav"
    run(_cfg(source=SOURCE, output=out, output_subtype="FLOAT", **options))
    return sf.read(out)[0]


def test_onnx_conversion_equals_torch_on_the_demo(voice, exported, tmp_path):
    # Index beside both files, retrieval on, the voice's pm F0: the whole pipeline runs.
    assert (exported.parent / "added_IVF4_Flat_nprobe_1_v_v1.index").is_file()
    torch_out = _convert(tmp_path, "torch", ckpt=voice)
    onnx_out = _convert(tmp_path, "onnx", ckpt=exported, backend="onnx", encoder_path=ENCODER)
    assert len(onnx_out) == len(torch_out) > 16000
    assert np.abs(onnx_out - torch_out).max() <= 1e-3
    assert np.abs(torch_out).max() > 0.1  # real audio, not two silences
    # pitch=auto reads the median recorded in the file: +12 from the voice's run both ways.
    up_t = _convert(tmp_path, "tu", ckpt=voice, pitch="auto")
    up_o = _convert(
        tmp_path, "ou", ckpt=exported, backend="onnx", encoder_path=ENCODER, pitch="auto"
    )
    assert np.abs(up_o - up_t).max() <= 1e-3 and np.abs(up_o - onnx_out).max() > 0.05


def test_metadata_records_voice_base_adapter_encoder_and_training(voice, exported):
    meta = OnnxVoice(exported).meta
    # The base the adapter was made for, as the adapter file records it (speaker rows, which
    # the adapter trains, left out).
    assert meta["base_sha256"] == read_adapter(voice).base_identity["sha256"]
    assert (meta["sr"], meta["version"], meta["f0"], meta["feature_dim"]) == (
        "16000",
        "v1",
        "1",
        "256",
    )
    assert meta["adapter_file"] == "adapter.safetensors" and len(meta["adapter_sha256"]) == 64
    assert (meta["base_file"], meta["kind"], meta["trained_f0_method"]) == (
        "f0G16k.pth",
        "adapter",
        "pm",
    )
    assert meta["encoder_file"] == "hubert_tiny.pt" and float(meta[MEDIAN_KEY]) == 180.0
    assert not any(str(REPO) in v for v in meta.values())  # no machine paths in a shared file


def test_validator_passes_an_export_and_refuses_a_cut_one(exported, tmp_path, capsys):
    assert onnx_check.main([str(exported)]) == 0
    assert "run: 2 x 173 frames -> [2, 1, 27680]" in capsys.readouterr().out
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    assert onnx_check.main([str(cut)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cut) in err


def _edited(exported: Path, tmp_path: Path, **changes) -> Path:
    proto = onnx.load(str(exported))
    for entry in proto.metadata_props:
        if entry.key in changes:
            entry.value = changes.pop(entry.key)
    keep = [e for e in proto.metadata_props if e.value != "<drop>"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    out = tmp_path / "edited.onnx"
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "<drop>"}, "not an rvc-lora ONNX voice"),
        ({"format_version": "9"}, "this rvc-lora reads"),
        ({"feature_dim": "768"}, "contradicts its own config"),
        ({"f0": "0"}, "graph inputs"),
        ({"config": "[1, 2]"}, "unreadable voice metadata"),
    ],
)
def test_bad_metadata_is_refused_in_one_line(exported, tmp_path, changes, message):
    with pytest.raises(OnnxError, match=message) as err:
        OnnxVoice(_edited(exported, tmp_path, **changes))
    assert "\n" not in str(err.value)


def test_truncated_or_foreign_files_are_refused_in_one_line(exported, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported.read_bytes()[:4096])
    with pytest.raises(OnnxError, match="not a readable ONNX model") as err:
        OnnxVoice(cut)
    assert "\n" not in str(err.value)
    linear = tmp_path / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(linear), dynamo=False)
    with pytest.raises(OnnxError, match="not an rvc-lora ONNX voice"):
        OnnxVoice(linear)


def test_index_or_encoder_that_do_not_match_the_file_are_refused(exported, tmp_path):
    wide = tmp_path / "added_IVF4_Flat_nprobe_1_w_v2.index"
    save_index(build_index(np.random.default_rng(0).standard_normal((400, 768)).astype("f4")), wide)
    common = dict(ckpt=exported, backend="onnx", source=SOURCE, output=tmp_path / "o.wav")
    with pytest.raises(RvcLoraError, match="768"):
        run(_cfg(index=wide, encoder_path=ENCODER, **common))
    other = tmp_path / "hubert_other.pt"
    other.write_bytes(ENCODER.read_bytes() + b"\0")
    with pytest.raises(OnnxError, match="trained with content encoder hubert_tiny.pt"):
        run(_cfg(encoder_path=other, **common))
    assert not (tmp_path / "o.wav").exists()


def test_wrong_pairings_of_mode_backend_and_file_are_refused(voice, exported, tmp_path):
    with pytest.raises(OnnxError, match="takes an exported .onnx voice"):
        run(_cfg(ckpt=voice, backend="onnx", source=SOURCE, output=tmp_path / "o.wav"))
    with pytest.raises(OnnxError, match="written to a .onnx file"):
        run(_cfg(ckpt=voice, mode="export_onnx", output=tmp_path / "voice.pth"))
    with pytest.raises(RvcLoraError, match="runs on a PyTorch voice"):
        run(_cfg(ckpt=exported, backend="onnx", mode="export_onnx", output=tmp_path / "x.onnx"))
    with pytest.raises(RvcLoraError, match="backend=tf: choose one of torch, onnx"):
        run(_cfg(ckpt=voice, backend="tf", source=SOURCE, output=tmp_path / "o.wav"))


def test_missing_onnxruntime_or_onnx_names_the_extra(voice, exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(OnnxError, match=r"needs onnxruntime: pip install -e '\.\[onnx\]'"):
        OnnxVoice(exported)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(OnnxError, match=r"ONNX export needs onnx: pip install"):
        run(_cfg(ckpt=voice, mode="export_onnx", output=tmp_path / "v.onnx"))
    assert not (tmp_path / "v.onnx").exists()


@pytest.mark.slow
def test_command_line_refuses_a_cut_file_without_traceback(exported, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported.read_bytes()[:4096])
    cmd = [
        sys.executable, "infer.py", "backend=onnx", f"ckpt={cut}", f"source={SOURCE}",
        f"output={tmp_path / 'o.wav'}", f"hydra.run.dir={tmp_path / 'h'}",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not a readable ONNX model" in res.stderr and not (tmp_path / "o.wav").exists()
