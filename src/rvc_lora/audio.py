"""Audio I/O for every stage: find, load (any format, mono) and resample recordings.

It sits on the floor beside ``spectral.py`` so that data, features, inference and evaluation
share it without reaching into each other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from rvc_lora.utils.errors import RvcLoraError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif")


class AudioError(RvcLoraError, ValueError):
    """An audio file that cannot be used; the message says which file and why."""


def find_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``root`` (recursively), sorted by relative path for stable ids."""
    root = Path(root)
    if not root.is_dir():
        raise AudioError(
            f"{root}: input folder does not exist; set data.input_dir to a folder of recordings"
        )
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Decode what libsndfile cannot (AAC, some MP3s) through an ffmpeg on PATH."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(
            f"{path}: format not readable by libsndfile and ffmpeg is not installed; "
            f"convert it to WAV/FLAC or install ffmpeg"
        )
    sr = 44100
    proc = subprocess.run(
        [
            exe,
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ac",
            "1",
            "-ar",
            str(sr),
            "-",
        ],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{path}: not decodable audio ({reason[-1] if reason else 'no data'})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), sr


def load_audio(path: str | os.PathLike[str], sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read any channel count / sample format as mono float32, resampled to ``sr`` if given.

    Raises:
        AudioError: empty, truncated or non-audio file, or NaN/Inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        y, file_sr = _decode_with_ffmpeg(path)
    if y.size == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: contains NaN or Inf samples; re-export the recording")
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
    return np.ascontiguousarray(y, dtype=np.float32), int(sr or file_sr)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling (soxr through librosa)."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(
        np.float32
    )
