"""Claims of the earlier RVC-LoRA attempt: verdicts follow the numbers."""

from __future__ import annotations

from typing import Any

from rvc_lora.report.claims import (
    HELD,
    MISSING,
    NOT_COMPARABLE,
    NOT_HELD,
    check_claims,
    claims_markdown,
    mel_claim,
    quality_claim,
    reference_lora,
    storage_claim,
    time_claim,
)


def rec(mode: str = "lora", preset: str | None = "decoder", rank: int | None = 8, **kw: Any):
    variant = "full" if mode == "full" else f"lora r{rank} {preset}"
    base = {"kind": "mean", "variant": variant, "model": "tiny", "mode": mode, "preset": preset}
    return {**base, "rank": rank, **kw}


FULL = rec("full", None, None, storage_10_mb=30.0, step_time_s=0.30, wall_to_best_s=60.0)
FULL.update(mcd_db=6.0, secs_target=0.80, val_mel=2.3)
LORA = rec(storage_10_mb=3.0, step_time_s=0.165, wall_to_best_s=40.0, mcd_db=6.2)
LORA.update(secs_target=0.79, val_mel=2.4, val_mel_first=3.0, best_step=300.0)


def test_storage_claim_switches_at_89_percent() -> None:
    c = storage_claim(FULL, LORA)
    assert c.verdict == HELD and c.sentence.startswith("Held: ")
    assert "90.0% less" in c.sentence
    c = storage_claim(FULL, {**LORA, "storage_10_mb": 4.5})
    assert c.verdict == NOT_HELD and c.sentence.startswith("Did not hold: ")
    assert "only 85.0% less" in c.sentence
    assert storage_claim(FULL, {**LORA, "storage_10_mb": None}).verdict == MISSING
    assert storage_claim(None, LORA).sentence == (
        "Not measurable: needs a full and a LoRA run, got LoRA only."
    )


def test_time_claim_switches_at_60_percent() -> None:
    c = time_claim(FULL, LORA)
    assert c.verdict == HELD
    assert "55.0% of a full fine-tuning step" in c.sentence
    assert "within the claimed 50-60%" in c.sentence
    assert "66.7% of full's (40.0 s vs 60.0 s)" in c.sentence
    c = time_claim(FULL, {**LORA, "step_time_s": 0.24})
    assert c.verdict == NOT_HELD and "80.0%" in c.sentence and "above the claimed" in c.sentence
    c = time_claim(FULL, {**LORA, "step_time_s": 0.09, "wall_to_best_s": None})
    assert c.verdict == HELD and "below the claimed 50-60%" in c.sentence
    assert "wall time to the best validation was not measured" in c.sentence
    assert time_claim(FULL, {**LORA, "step_time_s": None}).verdict == MISSING


def test_quality_claim_uses_mcd_and_secs_then_val_mel() -> None:
    c = quality_claim(FULL, LORA)
    assert c.verdict == HELD
    assert c.measured == "MCD 96.8%, SECS 98.8%"
    c = quality_claim(FULL, {**LORA, "mcd_db": 7.0})  # 6.0 / 7.0 = 86%
    assert c.verdict == NOT_HELD and "85.7% of full fine-tuning quality by MCD" in c.sentence
    c = quality_claim(FULL, {**LORA, "secs_target": 0.70})  # SECS 88% drags it below
    assert c.verdict == NOT_HELD
    c = quality_claim({**FULL, "mcd_db": None, "secs_target": None}, LORA)
    assert c.verdict == HELD and c.measured == "val mel 95.8%"  # 2.3 / 2.4
    c = quality_claim({**FULL, "mcd_db": None, "secs_target": None}, {**LORA, "val_mel": 2.5})
    assert c.verdict == NOT_HELD and c.measured == "val mel 92.0%"
    c = quality_claim({**FULL, "mcd_db": None, "val_mel": None}, LORA)
    assert c.verdict == HELD and c.measured == "SECS 98.8%"
    nothing = {**FULL, "mcd_db": None, "val_mel": None, "secs_target": None}
    assert quality_claim(nothing, LORA).verdict == MISSING


def test_mel_claim_is_never_compared() -> None:
    c = mel_claim([FULL, LORA])
    assert c.verdict == NOT_COMPARABLE
    assert "3.0000 → 2.4000 (-20.0%) by step 300" in c.sentence
    assert "0.5039 → 0.4236 (-15.9%)" in c.sentence
    assert mel_claim([FULL, {**LORA, "rank": 16}]).verdict == MISSING


def test_reference_is_rank8_decoder_else_best_by_mcd() -> None:
    r16 = rec(preset="all", rank=16, mcd_db=6.1)
    r4 = rec(rank=4, mcd_db=6.5)
    assert reference_lora([FULL, r4, LORA, r16], FULL)[0] is LORA
    ref, why = reference_lora([FULL, r4, r16], FULL)
    assert ref is r16 and "best by MCD" in why
    assert reference_lora([FULL], FULL) == (None, "")


def test_of_several_runs_of_a_setting_the_best_is_compared() -> None:
    # a train.lr sweep: two full rows and two rank-8 decoder rows, told apart by their settings
    full_lr = {**FULL, "variant": "full lr=0.001", "mcd_db": 5.5}
    lora_lr = {**LORA, "variant": "lora r8 decoder lr=0.001", "mcd_db": 5.9}
    claims, ref, why = check_claims([FULL, full_lr, LORA, lora_lr])
    assert ref is lora_lr and "best of 2 by MCD" in why
    quality = next(c for c in claims if c.key == "c")
    assert quality.measured.startswith("MCD 93.2%")  # full's best 5.5 dB against 5.9, not 6.0


def test_claims_section_lists_every_claim() -> None:
    claims, ref, _ = check_claims([FULL, LORA, {**LORA, "kind": "run"}])
    assert ref is LORA and [c.key for c in claims] == ["a", "b", "c", "d"]
    lines = claims_markdown([FULL, LORA])
    assert lines[0] == "## Claims of the earlier RVC-LoRA attempt"
    assert (
        "| (a) 89% less storage for 10 voices | 90.0% less (3.00 MB vs 30.00 MB) | held |" in lines
    )
    assert sum(line.startswith("- (") for line in lines) == 4


EPS = 1e-4


def test_storage_threshold_both_sides() -> None:
    full = {**FULL, "storage_10_mb": 100.0}
    assert storage_claim(full, {**LORA, "storage_10_mb": 11.0}).verdict == HELD  # exactly 89%
    assert storage_claim(full, {**LORA, "storage_10_mb": 11.0 - EPS}).verdict == HELD
    assert storage_claim(full, {**LORA, "storage_10_mb": 11.0 + EPS}).verdict == NOT_HELD


def test_time_thresholds_both_sides() -> None:
    full = {**FULL, "step_time_s": 1.0}
    assert time_claim(full, {**LORA, "step_time_s": 0.60}).verdict == HELD  # exactly 60%
    above = time_claim(full, {**LORA, "step_time_s": 0.60 + EPS})
    assert above.verdict == NOT_HELD and "above the claimed 50-60%" in above.sentence
    top = time_claim(full, {**LORA, "step_time_s": 0.60 - EPS})
    assert top.verdict == HELD and "within the claimed 50-60%" in top.sentence
    low = time_claim(full, {**LORA, "step_time_s": 0.50 + EPS})
    assert low.verdict == HELD and "within the claimed 50-60%" in low.sentence
    below = time_claim(full, {**LORA, "step_time_s": 0.50 - EPS})
    assert below.verdict == HELD and "below the claimed 50-60%" in below.sentence


def test_quality_threshold_both_sides() -> None:
    lora = {**LORA, "mcd_db": 10.0}
    full = {**FULL, "secs_target": None}
    assert quality_claim({**full, "mcd_db": 9.5}, lora).verdict == HELD  # exactly 95%
    assert quality_claim({**full, "mcd_db": 9.5 + EPS * 10}, lora).verdict == HELD
    assert quality_claim({**full, "mcd_db": 9.5 - EPS * 10}, lora).verdict == NOT_HELD
