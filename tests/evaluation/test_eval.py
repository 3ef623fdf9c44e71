"""``python eval.py``: pairing, eval.json's keys and values on a tiny trained voice, pitch=auto,
and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_lora.audio import load_audio
from rvc_lora.evaluation.corpus import EvalError, pair_utterances
from rvc_lora.evaluation.run import run
from rvc_lora.evaluation.summary import flat_summary
from rvc_lora.evaluation.voice import resolve_artifact
from rvc_lora.features.f0 import compute_f0
from rvc_lora.features.pitch import voiced_median_hz
from rvc_lora.inference.pitch import AutoPitchError, auto_pitch_shift
from rvc_lora.report.collect import EVAL_KEYS
from tests.evaluation.conftest import REPO, compose_app, copy_demo

FAST_EVAL = {"progress": "false", "metric_f0_method": "pm"}  # pm: the default, and fast


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---- fast ---------------------------------------------------------------------------------


def test_utterances_pair_by_file_stem(tmp_path) -> None:
    tone = np.zeros(1600, np.float32)
    for folder, names in (("eval", ["a.flac", "b.wav"]), ("src", ["a.wav", "c.wav"])):
        (tmp_path / folder).mkdir()
        for name in names:
            sf.write(tmp_path / folder / name, tone, 16000)
    pairs = pair_utterances(tmp_path / "eval", tmp_path / "src")
    assert [(u.name, u.source.name if u.source else None) for u in pairs] == [
        ("a", "a.wav"),
        ("b", None),
    ]
    assert all(u.source is None for u in pair_utterances(tmp_path / "eval", None))
    with pytest.raises(EvalError, match="source_dir=.*no such folder"):
        pair_utterances(tmp_path / "eval", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="eval_dir=.*no audio files"):
        pair_utterances(tmp_path / "empty", None)
    sf.write(tmp_path / "eval" / "a.wav", tone, 16000)
    with pytest.raises(EvalError, match="several files named 'a'"):
        pair_utterances(tmp_path / "eval", None)


def test_summary_headline_prefixes_and_nan_as_null() -> None:
    recon = [
        {"mcd_db": 4.0, "pesq": 2.0, "log_mel_l1": 0.5, "secs_target": 0.8},
        {"mcd_db": 6.0, "pesq": math.nan, "log_mel_l1": 0.7, "secs_target": 0.9},
    ]
    conv = [{"mcd_db": 8.0, "f0_rmse_cents": math.nan, "secs_target": 0.7, "secs_source": 0.3}]
    out = flat_summary(recon, conv)
    assert out["headline"] == "conversion" and out["mcd_db"] == 8.0 == out["conv_mcd_db"]
    assert out["recon_mcd_db"] == 5.0 and out["pesq"] == 2.0 == out["recon_pesq"]
    assert out["log_mel_l1"] == pytest.approx(0.6) and out["f0_rmse_cents"] is None
    assert set(EVAL_KEYS) <= set(out)
    alone = flat_summary(recon, [])
    assert alone["headline"] == "reconstruction" and alone["mcd_db"] == 5.0
    assert alone["secs_source"] is None and not any(k.startswith("conv_") for k in alone)


def test_resolve_artifact_errors_are_one_line(tmp_path) -> None:
    (tmp_path / "run_info.json").write_text("{}")
    cases = [
        ((None, None), "nothing to evaluate"),
        ((str(tmp_path / "nope"), None), "no such folder"),
        ((str(tmp_path), None), "no adapter.safetensors or generator.pth"),
        ((None, str(tmp_path / "x.safetensors")), "no such file"),
    ]
    for args, message in cases:
        with pytest.raises(EvalError, match=message) as err:
            resolve_artifact(*args)
        assert "\n" not in str(err.value)
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    assert resolve_artifact(None, str(ckpt)) == (ckpt, tmp_path)


def test_cli_refuses_a_run_dir_without_adapter(tmp_path) -> None:
    (tmp_path / "run_info.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "eval.py", f"run_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hy'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run_dir=")
    assert "no adapter.safetensors or generator.pth" in lines[0]
    assert not (tmp_path / "eval.json").exists()


# ---- slow: a real tiny run ----------------------------------------------------------------


@pytest.mark.slow
def test_training_records_median_and_val_quality(tiny_run) -> None:
    info = json.loads((tiny_run / "run_info.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 120 < info["voice_f0_median_hz"] < 250  # slt, a female voice, tracked by pm
    assert metrics["best_monitor"] == "val/mcd" and metrics["val/mcd"] > 0
    assert math.isfinite(metrics["val/f0_rmse"]) and "val/loss_mel" in metrics
    assert metrics["best_score"] is not None and (tiny_run / "best_adapter.safetensors").is_file()


@pytest.mark.slow
def test_eval_writes_report_keys(tiny_run, eval_sets) -> None:
    result = run(compose_app("eval", run_dir=tiny_run, **eval_sets, **FAST_EVAL))
    saved = _strict_json(tiny_run / "eval.json")
    assert saved == json.loads(json.dumps(result))
    assert saved["n_utterances"] == 2 and saved["n_conversions"] == 2
    assert saved["n_skipped"] == 0 and saved["n_unpaired"] == 0
    assert saved["headline"] == "conversion" and saved["index"] and saved["index_rate"] == 0.75
    finite = [
        *EVAL_KEYS,
        *(f"recon_{k}" for k in ("mcd_db", "log_mel_l1", "spectral_convergence", "pesq")),
        *(f"conv_{k}" for k in ("mcd_db", "secs_target", "secs_source", "pitch_shift")),
        "recon_secs_target",
        "rtf",
    ]
    for key in finite:
        value = saved.get(key)
        assert isinstance(value, float) and math.isfinite(value), key
    assert saved["recon_mcd_db"] > 0 and saved["mcd_db"] == saved["conv_mcd_db"]
    assert saved["pesq"] == saved["recon_pesq"] and 1.0 <= saved["pesq"] <= 4.65
    assert 0 <= saved["secs_target"] <= 1 and 0 < saved["rtf"]
    assert not any(k.startswith("conv_") and "pesq" in k for k in saved)  # never time-aligned

    # pitch=auto: the source's median (pm, as the voice trained) onto the voice's median
    voice = saved["voice_f0_median_hz"]
    expected = []
    for path in sorted(eval_sets["source_dir"].iterdir()):
        audio, _ = load_audio(path, 16000)
        expected.append(auto_pitch_shift(voice, voiced_median_hz(compute_f0(audio, "pm"))))
    assert expected[0] > 0  # rms speaks lower than slt
    assert abs(saved["conv_pitch_shift"] - np.mean(expected)) <= 1.0


@pytest.mark.slow
def test_eval_skips_unpaired_and_needs_a_median_for_auto(tiny_run, eval_sets, tmp_path) -> None:
    source = copy_demo(tmp_path / "source", "base/rms", ["s33"])
    out = tmp_path / "eval.json"
    options = {**eval_sets, **FAST_EVAL, "source_dir": source, "pesq": "false"}
    result = run(compose_app("eval", run_dir=tiny_run, output=out, **options))
    assert result["n_utterances"] == 2 and result["n_conversions"] == 1
    assert result["n_unpaired"] == 1 and out.is_file()

    old = tmp_path / "old_run"  # a run from before voice_f0_median_hz was recorded
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("checkpoints", "eval.json"))
    info = json.loads((old / "run_info.json").read_text())
    del info["voice_f0_median_hz"]
    (old / "run_info.json").write_text(json.dumps(info))
    with pytest.raises(EvalError, match="conversion_pitch=N") as err:
        run(compose_app("eval", run_dir=old, **options))
    assert "\n" not in str(err.value) and not (old / "eval.json").exists()


@pytest.mark.slow
def test_infer_pitch_auto(tiny_run, eval_sets, tmp_path, caplog) -> None:
    from rvc_lora.inference.run import run as infer

    source = eval_sets["source_dir"] / "s33.flac"
    out = tmp_path / "out.wav"
    with caplog.at_level("INFO", logger="rvc_lora.inference.pipeline"):
        infer(compose_app("infer", ckpt=tiny_run / "adapter.safetensors", source=source,
                          output=out, pitch="auto"))  # fmt: skip
    assert out.is_file() and "pitch=auto: source median" in caplog.text

    old = tmp_path / "old_run"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("checkpoints"))
    (old / "run_info.json").write_text("{}")
    with pytest.raises(AutoPitchError, match="pass pitch=N") as err:
        infer(compose_app("infer", ckpt=old / "adapter.safetensors", source=source,
                          output=tmp_path / "x.wav", pitch="auto"))  # fmt: skip
    assert "\n" not in str(err.value)
