"""Make the paper table's held-out target voices in ``data/demo/voices/`` (flite, espeak-ng).

Each voice is a target the tiny base never heard in pretraining (``data/demo/base/``), with its
own training audio (sentences s01..s32 of ``sentences.txt`` and s41..s80 of
``sentences_more.txt``: 72 utterances, >= 3 minutes) and its own 8 held-out sentences (s33..s40,
the ones the demo target ``slt`` is scored on). The voices differ in kind:

- ``slt``: flite's CMU ARCTIC female US voice (statistical parametric, CLUSTERGEN, trained on
  a real speaker's recordings). Its s01..s40 are the demo corpus files copied byte for byte
  (``target/slt``, ``eval/slt``), so ``make demo`` and the paper table score the same
  utterances; only s41..s80 are synthesised.
- ``espeak_us_f4``: espeak-ng formant synthesis, female variant ``f4`` with US pronunciation
  (the base's only female espeak voice is ``en-gb+f2``).
- ``espeak_rp_klatt``: espeak-ng's Klatt synthesiser (a different waveform generator from
  espeak-ng's default: Klatt's cascade/parallel formant resonators), male, Received Pronunciation.

Layout written (16 kHz mono 16-bit FLAC, trimmed and peak-normalised exactly like the demo
corpus, by its own functions):
  data/demo/voices/<voice>/train/sNN.flac   s01..s32 and s41..s80
  data/demo/voices/<voice>/eval/sNN.flac    s33..s40

Deterministic for the same flite/espeak-ng versions; each run rewrites a voice's folder whole,
so running it twice gives the same bytes. Needs the demo corpus (``make demo-corpus``) for slt.

Usage: python scripts/make_paper_voices.py [--out data/demo]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

# The demo corpus script sits next to this one (sys.path[0] when run as a script).
from make_demo_corpus import SAMPLE_RATE, read_sentences, synthesise, write_flac

ROOT = Path(__file__).resolve().parents[1]
# Sentence numbers (1-based, over sentences.txt then sentences_more.txt) held out per voice.
EVAL_IDS = range(33, 41)
VOICES: dict[str, list[str]] = {
    "slt": ["flite", "-voice", "slt"],
    "espeak_us_f4": ["espeak-ng", "-v", "en-us+f4"],
    "espeak_rp_klatt": ["espeak-ng", "-v", "en-gb-x-rp+klatt4"],
}
# The voice whose s01..s40 already exist in the demo corpus (copied, not re-synthesised).
DEMO_TARGET = "slt"
MIN_TRAIN_S = 180.0
F0_RANGE_HZ = (80.0, 400.0)


def median_f0(audio: np.ndarray) -> float:
    """Median F0 (Hz) over voiced frames of ``audio`` ``[T]`` (16 kHz), Praat autocorrelation
    with RVC's search range (50-1100 Hz), the project's ``pm`` extractor; 0.0 if none voiced."""
    from rvc_lora.features.f0 import f0_pm

    f0 = f0_pm(audio.astype(np.float64), p_len=len(audio) // 160 + 1, f0_min=50.0, f0_max=1100.0)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0


def demo_file(out: Path, number: int) -> Path:
    """The demo corpus file of sentence ``number`` for the demo target (target/ or eval/)."""
    split = "eval" if number in EVAL_IDS else "target"
    return out / split / DEMO_TARGET / f"s{number:02d}.flac"


def make_voice(out: Path, voice: str, sentences: list[str], tmp: Path) -> tuple[float, float, int]:
    """Write one voice's train/ and eval/ folders; returns (train seconds, median F0, files)."""
    folder = out / "voices" / voice
    shutil.rmtree(folder, ignore_errors=True)
    train_s, f0s, files = 0.0, [], 0
    for number, text in enumerate(sentences, start=1):
        split = "eval" if number in EVAL_IDS else "train"
        path = folder / split / f"s{number:02d}.flac"
        if voice == DEMO_TARGET and number <= 40:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(demo_file(out, number), path)
        else:
            write_flac(path, synthesise(VOICES[voice], text, tmp))
        audio = sf.read(path, dtype="float32")[0]  # what was written: normalised, 16-bit
        if split == "train":
            train_s += len(audio) / SAMPLE_RATE
        f0s.append(median_f0(audio))
        files += 1
    return train_s, float(np.median(f0s)), files


def build(out: Path) -> None:
    for tool in sorted({command[0] for command in VOICES.values()}):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found; install it with `apt-get install flite espeak-ng`")
    sentences = read_sentences(out / "sentences.txt") + read_sentences(out / "sentences_more.txt")
    if len(sentences) != 80:
        sys.exit(f"error: expected 40 + 40 sentences in {out}, found {len(sentences)}")
    # Checked before any folder is rewritten, so a missing demo corpus deletes nothing.
    missing = [p for n in range(1, 41) if not (p := demo_file(out, n)).is_file()]
    if missing:
        sys.exit(f"error: {missing[0]} is missing; run `make demo-corpus` first")
    with tempfile.TemporaryDirectory() as tmp_dir:
        for voice in VOICES:
            train_s, f0, files = make_voice(out, voice, sentences, Path(tmp_dir))
            print(
                f"{voice}: {train_s:.1f} s of training audio, median F0 {f0:.0f} Hz, {files} files"
            )
            if train_s < MIN_TRAIN_S:
                sys.exit(f"error: {voice} has {train_s:.0f} s of training audio (< {MIN_TRAIN_S})")
            if not F0_RANGE_HZ[0] <= f0 <= F0_RANGE_HZ[1]:
                sys.exit(f"error: {voice} median F0 {f0:.0f} Hz is outside {F0_RANGE_HZ} Hz")
    size = sum(p.stat().st_size for p in (out / "voices").rglob("*.flac"))
    print(f"{len(VOICES)} voices, {size / 1e6:.2f} MB of FLAC in {out / 'voices'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo")
    args = parser.parse_args()
    build(args.out)


if __name__ == "__main__":
    main()
