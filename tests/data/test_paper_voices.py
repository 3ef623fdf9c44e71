"""The paper table's held-out target voices (data/demo/voices/, scripts/make_paper_voices.py):
each voice has its own 72 training and 8 held-out utterances, none of them was in the tiny base's
pretraining set, slt's first 40 are the demo corpus files, and each has >= 3 minutes to train on."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from rvc_lora.utils.cli import CONFIG_DIR

DEMO = Path(CONFIG_DIR).parent / "data" / "demo"
VOICES_DIR = DEMO / "voices"
VOICES = ("slt", "espeak_us_f4", "espeak_rp_klatt")
TRAIN_STEMS = {f"s{i:02d}" for i in [*range(1, 33), *range(41, 81)]}
EVAL_STEMS = {f"s{i:02d}" for i in range(33, 41)}


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.flac")}


def _sentences(name: str) -> list[str]:
    lines = (DEMO / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_three_voices_are_there_and_nothing_else() -> None:
    assert sorted(p.name for p in VOICES_DIR.iterdir() if p.is_dir()) == sorted(VOICES)


@pytest.mark.parametrize("voice", VOICES)
def test_72_train_and_8_eval_files_and_no_sentence_in_both(voice: str) -> None:
    train, held = _stems(VOICES_DIR / voice / "train"), _stems(VOICES_DIR / voice / "eval")
    assert (len(train), len(held)) == (72, 8)
    assert train == TRAIN_STEMS
    assert held == EVAL_STEMS
    assert train & held == set()


@pytest.mark.parametrize("voice", VOICES)
def test_at_least_three_minutes_of_16k_mono_training_audio(voice: str) -> None:
    infos = [sf.info(p) for p in sorted((VOICES_DIR / voice / "train").glob("*.flac"))]
    assert {(i.samplerate, i.channels, i.subtype) for i in infos} == {(16000, 1, "PCM_16")}
    assert sum(i.duration for i in infos) >= 180.0


def test_slt_first_40_are_the_demo_corpus_files_byte_for_byte() -> None:
    for i in range(1, 41):
        name = f"s{i:02d}.flac"
        split, demo = ("eval", "eval") if i >= 33 else ("train", "target")
        copy = (VOICES_DIR / "slt" / split / name).read_bytes()
        assert copy == (DEMO / demo / "slt" / name).read_bytes(), name


def test_no_voice_was_in_the_pretraining_set() -> None:
    base = {p.name for p in (DEMO / "base").iterdir() if p.is_dir()}
    assert base, "data/demo/base/ is empty"
    assert base & set(VOICES) == set()


def test_the_40_more_sentences_are_new_and_8_to_14_words() -> None:
    more, first = _sentences("sentences_more.txt"), _sentences("sentences.txt")
    assert (len(first), len(more)) == (40, 40)
    assert len(set(more)) == 40
    assert set(more) & set(first) == set()
    assert all(8 <= len(line.split()) <= 14 for line in more)
