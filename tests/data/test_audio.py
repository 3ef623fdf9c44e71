"""Audio loading across formats, channel counts and rates; RVC's filter, chunking, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rvc_lora.audio import AudioError, find_audio_files, load_audio
from rvc_lora.data.audio import chunk_spans, highpass, normalize_chunk
from rvc_lora.data.synthetic import voiced


def _dominant_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * sr / len(y))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_sample_formats_load_as_float32(tmp_path, subtype: str) -> None:
    sr = 16000
    y = voiced(sr, 1.0)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, y, sr, subtype=subtype)
    out, out_sr = load_audio(path)
    assert out.dtype == np.float32 and out_sr == sr and out.shape == y.shape
    tolerance = 2 / 256 if subtype == "PCM_U8" else 1e-4
    assert np.abs(out - y).max() < tolerance


@pytest.mark.parametrize("file_sr", [8000, 96000])
def test_resampling_keeps_pitch_and_duration(tmp_path, file_sr: int) -> None:
    t = np.arange(file_sr) / file_sr
    path = tmp_path / "tone.flac"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), file_sr)
    out, sr = load_audio(path, 40000)
    assert sr == 40000 and abs(len(out) - 40000) <= 1
    assert abs(_dominant_hz(out, sr) - 1000) < 2


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_averaged_to_mono(tmp_path, channels: int) -> None:
    sr = 16000
    y = voiced(sr, 0.5)
    data = np.stack([y * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(tmp_path / "multi.wav", data, sr, subtype="FLOAT")
    out, _ = load_audio(tmp_path / "multi.wav")
    np.testing.assert_allclose(out, data.mean(axis=1), atol=1e-6)


def test_ogg_and_names_with_spaces_and_non_ascii(tmp_path) -> None:
    sr = 16000
    nested = tmp_path / "session 1" / "día dos"
    nested.mkdir(parents=True)
    sf.write(nested / "take ünïcødé 1.ogg", voiced(sr, 1.0), sr)
    sf.write(tmp_path / "a.flac", voiced(sr, 1.0), sr)
    (tmp_path / "notes.txt").write_text("not audio")
    files = find_audio_files(tmp_path)
    assert [f.name for f in files] == ["a.flac", "take ünïcødé 1.ogg"]
    out, _ = load_audio(files[1])
    assert abs(len(out) - sr) < 100  # vorbis may pad a little


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "file is empty"), (b"hello, this is text\n" * 10, "not decodable|not readable|format")],
)
def test_unreadable_files_raise_audio_error(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_header_raises_audio_error(tmp_path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, voiced(16000, 0.5), 16000)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioError):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad: float) -> None:
    y = voiced(16000, 0.5)
    y[100] = bad
    sf.write(tmp_path / "nan.wav", y, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(tmp_path / "nan.wav")


def test_highpass_removes_rumble_and_keeps_speech_band() -> None:
    sr = 40000
    t = np.arange(sr) / sr
    rumble = np.sin(2 * np.pi * 20 * t).astype(np.float32)
    voice = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    tail = slice(sr // 2, None)  # after the causal filter's transient
    assert np.std(highpass(rumble, sr)[tail]) < 0.1 * np.std(rumble)
    assert np.std(highpass(voice, sr)[tail]) > 0.95 * np.std(voice)


def test_chunking_matches_rvc_rule() -> None:
    sr = 1000
    # 10 s: windows of 3.7 s every 3.4 s while more than 4.0 s remains, then the remainder.
    assert list(chunk_spans(10 * sr, sr)) == [(0, 3700), (3400, 7100), (6800, 10000)]
    assert list(chunk_spans(4000, sr)) == [(0, 4000)]
    assert list(chunk_spans(4001, sr)) == [(0, 3700), (3400, 4001)]


def test_normalisation_matches_rvc_and_skips_loud_chunks() -> None:
    y = np.array([0.2, -0.4, 0.1], dtype=np.float32)
    expected = y / 0.4 * 0.675 + 0.25 * y
    np.testing.assert_allclose(normalize_chunk(y), expected, rtol=1e-6)
    assert normalize_chunk(np.array([3.0, 0.1], dtype=np.float32)) is None
    assert normalize_chunk(np.zeros(10, dtype=np.float32)) is None


def test_mp3_loads(tmp_path) -> None:
    sr = 16000
    sf.write(tmp_path / "take.mp3", voiced(sr, 1.0), sr)
    out, out_sr = load_audio(tmp_path / "take.mp3", 40000)
    assert out_sr == 40000 and abs(len(out) - 40000) < 2000  # mp3 frames pad the ends


def test_fallback_decoder_missing_gives_a_fix(tmp_path, monkeypatch) -> None:
    import rvc_lora.audio as audio

    path = tmp_path / "voice.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    monkeypatch.setattr(audio.shutil, "which", lambda _name: None)
    with pytest.raises(AudioError, match="ffmpeg is not installed; convert it to WAV/FLAC"):
        load_audio(path)
