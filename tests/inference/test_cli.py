"""`python infer.py`: convert files and folders, export, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from rvc_lora.data.synthetic import phrases
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.inference.run import run
from rvc_lora.lora import LoraConfig, base_state_dict, inject_lora, save_adapter
from rvc_lora.models import build_synthesizer, load_rvc_checkpoint
from rvc_lora.utils.atomic import atomic_torch_save
from rvc_lora.utils.cli import CONFIG_DIR
from rvc_lora.utils.errors import RvcLoraError
from tests.lora.tiny import randomize_adapter

REPO = Path(CONFIG_DIR).parent


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    """A run dir as training leaves it: adapter, base.pth and the run's config."""
    run_dir = tmp_path_factory.mktemp("run")
    encoder = write_tiny_fairseq_checkpoint(run_dir.parent / "hubert_tiny.pt")
    torch.manual_seed(0)
    model = build_synthesizer("tiny")
    atomic_torch_save({"model": base_state_dict(model)}, run_dir / "base.pth")
    inject_lora(model, LoraConfig(preset="decoder"))
    randomize_adapter(model, relative=0.2)
    save_adapter(model, run_dir / "adapter.safetensors")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(
        OmegaConf.create(
            {
                "model": {"preset": "tiny", "f0": True, "pretrained_g": None},
                "features": {"encoder_path": str(encoder), "f0_method": "pm"},
            }
        ),
        run_dir / ".hydra" / "config.yaml",
    )
    return run_dir / "adapter.safetensors"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "sentence.wav"
    sf.write(path, phrases(22050, n=2, seconds=1.2, seed=3), 22050)
    return path


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


def test_convert_file_keeps_duration(voice, source, tmp_path) -> None:
    out = tmp_path / "out.wav"
    assert run(_cfg(ckpt=voice, source=source, output=out)) == [out]
    audio, sr = sf.read(out)
    duration = sf.info(source).duration
    # RVC drops a hop or two per chunk (HuBERT's 400-sample window is not padded back).
    assert sr == 16000 and abs(len(audio) / sr - duration) <= 0.03
    assert np.abs(audio).max() > 0.01


def test_convert_folder_recursively_and_skip_bad_files(voice, source, tmp_path) -> None:
    src = tmp_path / "in"
    (src / "a b" / "ñ").mkdir(parents=True)
    sf.write(src / "one.flac", sf.read(source)[0], 22050)
    sf.write(src / "a b" / "ñ" / "two.wav", sf.read(source)[0], 22050)
    (src / "broken.wav").write_text("not audio")
    written = run(_cfg(ckpt=voice, source=src, output=tmp_path / "out"))
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == ["a b/ñ/two.wav", "one.wav"]
    assert not (tmp_path / "out" / "broken.wav").exists()


def test_export_writes_rvc_model_with_same_voice(voice, tmp_path) -> None:
    out = tmp_path / "voice.pth"
    run(_cfg(ckpt=voice, mode="export", output=out))
    loaded = load_rvc_checkpoint(out)
    assert loaded.kind == "inference" and loaded.preset == "tiny"


@pytest.mark.parametrize("case", ["missing", "corrupt", "silent"])
def test_bad_sources_give_one_line_errors_and_no_output(voice, tmp_path, case) -> None:
    src = tmp_path / "in.wav"
    if case == "corrupt":
        src.write_bytes(b"RIFF\x00\x00")
    elif case == "silent":
        sf.write(src, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "out.wav"
    with pytest.raises(RvcLoraError) as err:
        run(_cfg(ckpt=voice, source=src, output=out))
    assert "\n" not in str(err.value) and str(src) in str(err.value)
    assert list(tmp_path.iterdir()) == ([src] if case != "missing" else [])


def test_wrong_checkpoint_and_foreign_base_are_refused(voice, source, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(RvcLoraError, match="not a model checkpoint"):
        run(_cfg(ckpt=notes, source=source, output=tmp_path / "o.wav"))
    torch.manual_seed(99)
    other = tmp_path / "other.pth"
    atomic_torch_save({"model": build_synthesizer("tiny").state_dict()}, other)
    with pytest.raises(RvcLoraError, match="base"):
        run(
            _cfg(
                ckpt=voice,
                source=source,
                output=tmp_path / "o.wav",
                **{"model.pretrained_g": other},
            )
        )
    assert not (tmp_path / "o.wav").exists()


def test_index_of_other_dimension_is_refused(voice, source, tmp_path) -> None:
    from rvc_lora.features.index import build_index, save_index

    idx = tmp_path / "added_IVF4_Flat_nprobe_1_x_v2.index"
    save_index(build_index(np.random.default_rng(0).standard_normal((400, 768)).astype("f4")), idx)
    with pytest.raises(RvcLoraError, match="768"):
        run(_cfg(ckpt=voice, source=source, output=tmp_path / "o.wav", index=idx))
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.slow
def test_command_line_errors_have_no_traceback(voice, tmp_path) -> None:
    cmd = [
        sys.executable,
        "infer.py",
        f"ckpt={voice}",
        f"source={tmp_path / 'nope.wav'}",
        f"output={tmp_path / 'o.wav'}",
        f"hydra.run.dir={tmp_path / 'h'}",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "no such file or folder" in res.stderr


def test_exported_pth_converts_like_the_adapter(voice, source, tmp_path) -> None:
    exported = tmp_path / "voice.pth"
    run(_cfg(ckpt=voice, mode="export", output=exported))
    via_adapter = tmp_path / "a.wav"
    via_export = tmp_path / "e.wav"
    run(_cfg(ckpt=voice, source=source, output=via_adapter, output_subtype="FLOAT"))
    encoder = OmegaConf.load(voice.parent / ".hydra" / "config.yaml").features.encoder_path
    run(
        _cfg(
            ckpt=exported,
            source=source,
            output=via_export,
            output_subtype="FLOAT",
            encoder_path=encoder,
            f0_method="pm",
        )
    )
    a, _ = sf.read(via_adapter)
    e, _ = sf.read(via_export)
    assert a.shape == e.shape
    # The export stores fp16 weights (RVC's format); that rounding is the only difference.
    assert np.abs(a - e).max() < 2e-2 * np.abs(a).max()


def test_sources_differing_only_in_extension_both_convert(voice, tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.flac", phrases(22050, n=2, seconds=1.2, seed=3), 22050)
    sf.write(src / "a.wav", phrases(22050, n=1, seconds=1.0, seed=4), 22050)
    written = run(_cfg(ckpt=voice, source=src, output=tmp_path / "out"))
    assert sorted(p.name for p in written) == ["a.flac.wav", "a.wav"]
    for name, source in (("a.flac.wav", "a.flac"), ("a.wav", "a.wav")):
        # each output is the conversion of its own source (they differ in length)
        assert (
            abs(sf.info(tmp_path / "out" / name).duration - sf.info(src / source).duration) < 0.03
        )
    assert "a.flac -> a.flac.wav (a.wav is the output of another file)" in capsys.readouterr().out


def test_outputs_that_would_still_collide_are_refused_before_converting(voice, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.flac", "a.wav", "a.flac.wav"):
        sf.write(src / name, phrases(16000, n=1, seconds=1.0, seed=len(name)), 16000)
    with pytest.raises(RvcLoraError) as err:
        run(_cfg(ckpt=voice, source=src, output=tmp_path / "out"))
    assert str(err.value) == (
        f"{src}: a.flac and a.flac.wav would both be written to a.flac.wav; rename one of them"
    )
    assert not (tmp_path / "out").exists()


def test_too_short_input_names_its_file(voice, source, tmp_path) -> None:
    short = tmp_path / "blip.wav"
    sf.write(short, phrases(16000, n=1, seconds=1.0)[8000:8160], 16000)  # 160 samples
    with pytest.raises(RvcLoraError) as err:
        run(_cfg(ckpt=voice, source=short, output=tmp_path / "o.wav"))
    assert str(err.value) == (
        f"{short}: too short (10 ms, 160 samples at 16 kHz); need at least 25 ms"
    )
    folder = tmp_path / "in"
    folder.mkdir()
    short.rename(folder / "blip.wav")
    sf.write(folder / "ok.wav", sf.read(source)[0], 22050)
    written = run(_cfg(ckpt=voice, source=folder, output=tmp_path / "out"))
    assert [p.name for p in written] == ["ok.wav"]  # the short file is skipped, not fatal
