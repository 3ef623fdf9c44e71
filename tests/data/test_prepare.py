"""Folder -> cache -> batches, end to end on the tiny content encoder, with bad files mixed in."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_lora.data.cache import read_entry
from rvc_lora.data.datamodule import VoiceDataModule
from rvc_lora.data.features_cache import NoUsableAudioError
from rvc_lora.data.synthetic import phrases, voiced


def _voice_folder(root, bad: bool = True):
    (root / "nested" / "día 2").mkdir(parents=True)
    sf.write(root / "take one.wav", phrases(44100, n=2, seconds=1.6, seed=1), 44100)
    sf.write(
        root / "nested" / "día 2" / "tomá.flac",
        phrases(22050, n=2, seconds=1.6, seed=5),
        22050,
        subtype="PCM_24",
    )
    sf.write(root / "stereo.wav", np.stack([phrases(16000, n=1, seed=9)] * 2, axis=1), 16000)
    if bad:
        (root / "empty.wav").write_bytes(b"")
        (root / "readme.wav").write_text("not audio at all")
        sf.write(root / "cut.wav", voiced(16000, 1.0), 16000)
        (root / "cut.wav").write_bytes((root / "cut.wav").read_bytes()[:30])
        sf.write(root / "click.wav", voiced(16000, 0.01), 16000)
        sf.write(root / "silence.wav", np.zeros(16000 * 2, np.float32), 16000)
        nan = voiced(16000, 1.0)
        nan[10] = np.nan
        sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    return root


def _dm(tmp_path, encoder_path, f0_method: str = "pm", **kw) -> VoiceDataModule:
    return VoiceDataModule(
        input_dir=str(tmp_path / "voice"),
        cache_dir=str(tmp_path / "cache"),
        sample_rate=16000,
        hop_length=160,
        n_fft=512,
        version="v1",
        encoder_path=str(encoder_path),
        f0_method=f0_method,
        batch_size=2,
        progress=False,
        **kw,
    )


def test_prepare_skips_bad_files_and_batches_the_rest(tmp_path, encoder_path, caplog) -> None:
    _voice_folder(tmp_path / "voice")
    dm = _dm(tmp_path, encoder_path)
    dm.prepare_data()
    report = dm.report
    reasons = dict(report.skipped)
    assert set(reasons) == {
        "empty.wav",
        "readme.wav",
        "cut.wav",
        "click.wav",
        "silence.wav",
        "nan.wav",
    }
    assert "file is empty" in reasons["empty.wav"]
    assert "too short" in reasons["click.wav"]
    assert "only silence" in reasons["silence.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert all("\n" not in r for r in reasons.values())
    assert "skipped 6 of 9 files" in caplog.text
    assert {i.source for i in report.items} == {
        "take one.wav",
        "nested/día 2/tomá.flac",
        "stereo.wav",
    }
    assert report.slices_extracted == len(report.items) >= 5
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    item = read_entry(report.items[0].feature_path)
    audio = read_entry(report.items[0].slice_path)
    t50 = (len(audio["wav16k"]) - 400) // 320 + 1  # RVC's HuBERT frame count
    assert item["feats"].shape == (t50, 256)
    assert len(item["f0"]) == len(audio["wav16k"]) // 160 == len(item["pitch"])
    voiced_f0 = item["f0"][item["f0"] > 0]
    assert 100 < np.median(voiced_f0) < 250  # the phrases are voiced at 150-180 Hz

    dm.setup("fit")
    train_sources = {i.source for i in dm.train_items}
    val_sources = {i.source for i in dm.val_items}
    assert val_sources and train_sources and not (train_sources & val_sources)
    batch = next(iter(dm.train_dataloader()))
    b, t = batch["pitch"].shape
    assert batch["phone"].shape == (b, t, 256) and batch["spec"].shape == (b, 257, t)
    assert batch["wav"].shape == (b, 1, t * 160) and batch["pitch"].dtype == torch.int64
    assert int(batch["lengths"].max()) == t and batch["sid"].tolist() == [0] * b


def test_second_run_extracts_nothing_and_f0_change_re_extracts(tmp_path, encoder_path) -> None:
    _voice_folder(tmp_path / "voice", bad=False)
    first = _dm(tmp_path, encoder_path, prepare_workers=2)  # slicing + F0 in worker processes
    first.prepare_data()
    n = len(first.report.items)
    again = _dm(tmp_path, encoder_path)
    again.prepare_data()
    assert (again.report.slices_extracted, again.report.files_sliced) == (0, 0)
    assert again.report.slices_reused == n
    assert again.builder()._encoder is None  # nothing to extract: the encoder was never loaded

    harvest = _dm(tmp_path, encoder_path, f0_method="harvest")
    harvest.prepare_data()
    assert harvest.report.slices_extracted == n and harvest.report.files_sliced == 0

    # A damaged entry is detected and rebuilt, never used.
    victim = again.report.items[0].feature_path
    victim.write_bytes(victim.read_bytes()[:64])
    repaired = _dm(tmp_path, encoder_path)
    repaired.prepare_data()
    assert repaired.report.slices_extracted == 1 and read_entry(victim) is not None


def test_folder_without_usable_audio_stops_with_clear_error(tmp_path, encoder_path) -> None:
    voice = tmp_path / "voice"
    voice.mkdir()
    (voice / "empty.wav").write_bytes(b"")
    sf.write(voice / "silence.flac", np.zeros(32000, np.float32), 16000)
    with pytest.raises(NoUsableAudioError, match="no usable audio in 2 files"):
        _dm(tmp_path, encoder_path).prepare_data()


def test_missing_encoder_weights_name_the_file_and_the_fix(tmp_path) -> None:
    _voice_folder(tmp_path / "voice", bad=False)
    with pytest.raises(
        Exception, match=r"weights not found: looked for .*hubert_base\.pt.*download"
    ):
        _dm(tmp_path, tmp_path / "models" / "hubert_base.pt").prepare_data()


@pytest.mark.slow
def test_prepare_command_line(tmp_path) -> None:
    _voice_folder(tmp_path / "voice")
    cmd = [
        sys.executable,
        "-m",
        "rvc_lora.data.prepare",
        f"data.input_dir={tmp_path / 'voice'}",
        f"paths.root_dir={tmp_path}",
        "data.progress=false",
        "features.f0_method=pm",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "prepared" in ok.stdout and ok.stdout.count("skipped:") == 6
    assert (tmp_path / "models" / "hubert_tiny.pt").is_file()  # created on first use

    (tmp_path / "empty").mkdir()
    cmd[3] = f"data.input_dir={tmp_path / 'empty'}"
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "no usable audio in 0 files" in bad.stderr


def test_damaged_slice_is_rebuilt_in_the_same_run(tmp_path, encoder_path) -> None:
    _voice_folder(tmp_path / "voice", bad=False)
    first = _dm(tmp_path, encoder_path)
    first.prepare_data()
    first.report.items[0].slice_path.write_bytes(b"junk")
    again = _dm(tmp_path, encoder_path, f0_method="harvest")  # features must be re-extracted
    again.prepare_data()
    assert again.report.skipped == [] and again.report.files_sliced == 1
    assert len(again.report.items) == len(first.report.items)


def test_speaker_ids_by_folder_for_multi_speaker_pretraining(tmp_path, encoder_path) -> None:
    for i, name in enumerate(["bob", "alice"]):
        (tmp_path / "voice" / name).mkdir(parents=True)
        for take in range(2):
            sf.write(
                tmp_path / "voice" / name / f"t{take}.wav",
                phrases(16000, n=1, seconds=1.2, seed=10 * i + take),
                16000,
            )
    sf.write(tmp_path / "voice" / "loose.wav", phrases(16000, n=1, seconds=1.2, seed=99), 16000)
    dm = _dm(tmp_path, encoder_path, speaker_id="folder", val_fraction=0.0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.speakers == ["", "alice", "bob"]  # files at the top share speaker 0
    by_source = {
        item.source.split("/")[0]: ds[i]["sid"].item()
        for ds in (dm.train_dataloader().dataset, dm.val_dataloader().dataset)
        for i, item in enumerate(ds.items)
    }  # at least one file is always held out for validation
    assert by_source == {"loose.wav": 0, "alice": 1, "bob": 2}

    single = _dm(tmp_path, encoder_path, speaker_id=3, val_fraction=0.0)
    single.prepare_data()
    single.setup("fit")
    one = single.train_dataloader().dataset
    assert {one[i]["sid"].item() for i in range(len(one))} == {3}

    wrong = _dm(tmp_path, encoder_path, speaker_id="folders")
    wrong.prepare_data()
    with pytest.raises(ValueError, match="'folder'"):
        wrong.setup("fit")


def test_same_name_other_extension_both_train_and_copies_count_once(tmp_path, encoder_path) -> None:
    voice = tmp_path / "voice"
    voice.mkdir()
    sf.write(voice / "a.flac", phrases(16000, n=1, seconds=1.6, seed=1), 16000)
    sf.write(voice / "a.wav", phrases(16000, n=1, seconds=1.6, seed=2), 16000)
    (voice / "copy of a.wav").write_bytes((voice / "a.wav").read_bytes())
    dm = _dm(tmp_path, encoder_path, val_fraction=0.5)
    dm.prepare_data()
    assert sorted({i.source for i in dm.report.items}) == ["a.flac", "a.wav"]
    assert len({i.feature_path for i in dm.report.items}) == len(dm.report.items) == 2
    # A copy would put the same audio on both sides of the train/validation split.
    assert dm.report.skipped == [("copy of a.wav", "copy of a.wav: same audio as a.wav; used once")]
