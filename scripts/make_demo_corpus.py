"""Regenerate the demo corpus in ``data/demo/`` with Debian's speech synthesisers.

The same sentences (``data/demo/sentences.txt``) are spoken by every voice, so the corpus is
parallel: a sentence converted into the target voice can be scored against the target's own
utterance of it. Needs ``flite`` and ``espeak-ng`` (``apt-get install flite espeak-ng``).

Layout written (16 kHz mono 16-bit FLAC):
  data/demo/base/<voice>/sNN.flac     every sentence, every voice but the target (pretraining)
  data/demo/target/<voice>/sNN.flac   the target voice, training sentences only (adapters)
  data/demo/eval/<voice>/sNN.flac     the target voice, held-out sentences (scoring)

Usage: python scripts/make_demo_corpus.py [--out data/demo]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000
TARGET = "slt"
# How many of the sentences (from the end of the list) the target never trains on.
HELD_OUT = 8
PEAK = 0.5
# name -> command prefix; the text and output path are appended. flite's CMU voices are 16 kHz,
# espeak-ng's formant voices 22.05 kHz (resampled). espeak variants (+m3, +f2...) change the
# formant set and pitch, so they are different "speakers" for the encoder and the speaker metric.
VOICES: dict[str, list[str]] = {
    "slt": ["flite", "-voice", "slt"],
    "awb": ["flite", "-voice", "awb"],
    "rms": ["flite", "-voice", "rms"],
    "kal16": ["flite", "-voice", "kal16"],
    "espeak_us_m3": ["espeak-ng", "-v", "en-us+m3"],
    "espeak_gb_f2": ["espeak-ng", "-v", "en-gb+f2"],
    "espeak_sc_m1": ["espeak-ng", "-v", "en-gb-scotland+m1"],
}


def read_sentences(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def synthesise(command: list[str], text: str, tmp: Path) -> np.ndarray:
    wav = tmp / "out.wav"
    if command[0] == "flite":
        args = [*command, "-t", text, "-o", str(wav)]
    else:
        args = [*command, "-w", str(wav), text]
    subprocess.run(args, check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ")
    return trim_silence(audio)


def trim_silence(audio: np.ndarray, keep_s: float = 0.1, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing silence to ``keep_s`` seconds so voices have comparable padding."""
    frame = 160
    n = len(audio) // frame
    energy = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(energy / (energy.max() + 1e-12)) > floor_db)
    if loud.size == 0:
        return audio
    keep = int(keep_s * SAMPLE_RATE)
    start = max(0, loud[0] * frame - keep)
    end = min(len(audio), (loud[-1] + 1) * frame + keep)
    return audio[start:end]


def write_flac(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One peak level for every voice (the voices' raw levels differ by >10 dB) and headroom:
    # at 0.5 FLAC spends about a bit less per sample than at full scale, which keeps the corpus
    # under its size budget; preprocessing normalises loudness anyway.
    audio = audio * (PEAK / max(float(np.abs(audio).max()), 1e-9))
    tmp = path.with_name(path.name + ".tmp.flac")
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC", compression_level=1.0)
    tmp.replace(path)


def build(out: Path) -> None:
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found; install it with `apt-get install flite espeak-ng`")
    sentences = read_sentences(out / "sentences.txt")
    held = set(range(len(sentences) - HELD_OUT, len(sentences)))
    for split in ("base", "target", "eval"):
        shutil.rmtree(out / split, ignore_errors=True)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp_dir:
        for voice, command in VOICES.items():
            for i, text in enumerate(sentences):
                audio = synthesise(command, text, Path(tmp_dir))
                total += len(audio) / SAMPLE_RATE
                if voice != TARGET:
                    split = "base"
                else:
                    split = "eval" if i in held else "target"
                write_flac(out / split / voice / f"s{i + 1:02d}.flac", audio)
            print(f"{voice}: {len(sentences)} sentences", flush=True)
    size = sum(p.stat().st_size for p in out.rglob("*.flac"))
    print(f"{len(VOICES)} voices, {total / 60:.1f} min of audio, {size / 1e6:.2f} MB of FLAC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo")
    args = parser.parse_args()
    build(args.out)


if __name__ == "__main__":
    main()
