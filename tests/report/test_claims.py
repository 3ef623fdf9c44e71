"""Claims of the earlier RVC-LoRA attempt: verdicts follow the paired intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from rvc_lora.report.claims import (
    MISSING,
    NOT_COMPARABLE,
    band_verdict,
    check_claims,
    claims_markdown,
    compared_size,
    mel_claim,
    pooled,
    quality_claim,
    reference_lora,
    storage_claim,
    time_claim,
)
from rvc_lora.report.stats import FAILS, HOLDS, UNDECIDED, Interval

Record = dict[str, Any]
T_975_2 = 4.302653  # t_{0.975, 2}: three pairs


def runs(
    variant: str = "lora r8 decoder",
    mode: str = "lora",
    preset: str | None = "decoder",
    rank: int | None = 8,
    seeds: Sequence[int] = (0, 1, 2),
    voice: str = "a",
    size: str = "all",
    **values: Any,
) -> list[Record]:
    """One run record per seed; a list value gives each seed its own number."""
    out = []
    for i, seed in enumerate(seeds):
        rec: Record = {"kind": "run", "variant": variant, "model": "tiny", "mode": mode}
        rec.update(preset=preset, rank=rank, voice=voice, data_size=size, seed=str(seed))
        rec["d_policy"] = "trained" if mode == "full" else None
        rec.update({k: v[i] if isinstance(v, list) else v for k, v in values.items()})
        out.append(rec)
    return out


def edit(recs: list[Record], **changes: Any) -> list[Record]:
    """The records with ``changes`` (a list value: one per record)."""
    return [
        {**r, **{k: v[i] if isinstance(v, list) else v for k, v in changes.items()}}
        for i, r in enumerate(recs)
    ]


FULL = runs("full", "full", None, None, storage_10_mb=30.0, step_time_s=0.30, wall_to_best_s=60.0)
FULL = edit(FULL, mcd_db=6.0, secs=0.80, val_mel=2.3)
# step ratios 0.54, 0.55, 0.56: mean 0.55, s = 0.01
LORA = runs(storage_10_mb=3.0, step_time_s=[0.162, 0.165, 0.168], wall_to_best_s=40.0)
LORA = edit(LORA, mcd_db=6.2, secs=0.79, val_mel=2.4, val_mel_first=3.0, best_step=300.0)


def one(recs: list[Record]) -> Record:
    return pooled(recs)[0]


def test_storage_claim_switches_at_89_percent() -> None:
    c = storage_claim(one(FULL), one(LORA))
    assert c.verdict == HOLDS and c.sentence.startswith("Holds: ")
    assert "90.0% less" in c.sentence
    c = storage_claim(one(FULL), one(edit(LORA, storage_10_mb=4.5)))
    assert c.verdict == FAILS and c.sentence.startswith("Fails: ")
    assert "only 85.0% less" in c.sentence
    assert storage_claim(one(FULL), one(edit(LORA, storage_10_mb=None))).verdict == MISSING
    assert storage_claim(None, one(LORA)).sentence == (
        "Not measurable: needs a full and a LoRA run, got LoRA only."
    )


def test_time_claim_reads_the_t_interval_of_paired_step_ratios() -> None:
    c = time_claim(FULL + LORA, one(FULL), one(LORA))
    half = T_975_2 * 0.01 / math.sqrt(3)  # 0.0248
    assert (0.55 - half, 0.55 + half) == pytest.approx((0.525159, 0.574841), abs=1e-6)
    assert c.verdict == HOLDS and c.sentence.startswith("Holds: ")
    assert "55.0% [52.5%, 57.5%] over 3 pairs of a full fine-tuning step" in c.sentence
    assert "(0.165 s vs 0.300 s on average), within the claimed 50-60%" in c.sentence
    assert "66.7% [66.7%, 66.7%] over 3 pairs of full's (40.0 s vs 60.0 s on average)" in c.sentence
    # ratios 0.58, 0.60, 0.62 reach across 60%: the interval cannot tell
    across = time_claim(FULL + edit(LORA, step_time_s=[0.174, 0.18, 0.186]), one(FULL), one(LORA))
    assert across.verdict == UNDECIDED and "overlapping the claimed 50-60%" in across.sentence
    assert across.sentence.startswith("Undecided (intervals overlap): ")
    slow = time_claim(FULL + edit(LORA, step_time_s=0.24), one(FULL), one(LORA))
    assert slow.verdict == FAILS and "80.0% [80.0%, 80.0%]" in slow.sentence
    assert "above the claimed" in slow.sentence
    fast = edit(LORA, step_time_s=0.09, wall_to_best_s=None)
    c = time_claim(FULL + fast, one(FULL), one(fast))
    assert c.verdict == HOLDS and "below the claimed 50-60%" in c.sentence  # faster than claimed
    assert "wall time to the best validation was not measured" in c.sentence
    missing = edit(LORA, step_time_s=None)
    assert time_claim(FULL + missing, one(FULL), one(missing)).verdict == MISSING


def test_one_pair_gives_no_interval_and_no_verdict() -> None:
    full, lora = FULL[:1], LORA[:1]
    c = time_claim(full + lora, one(full), one(lora))
    assert c.verdict == UNDECIDED and "54.0% (1 pair, no interval)" in c.sentence
    assert c.measured.startswith("step 54.0% (n = 1)")
    assert quality_claim(full + lora, one(full), one(lora)).verdict == UNDECIDED


def test_time_band_ends_are_inside() -> None:
    at = Interval(0.55, 0.50, 0.60, 3)
    assert band_verdict(at, (0.50, 0.60)) == HOLDS
    assert band_verdict(Interval(0.55, 0.4999, 0.60, 3), (0.50, 0.60)) == HOLDS  # faster: holds
    assert band_verdict(Interval(0.55, 0.50, 0.6001, 3), (0.50, 0.60)) == UNDECIDED
    assert band_verdict(Interval(0.45, 0.40, 0.4999, 3), (0.50, 0.60)) == HOLDS
    assert band_verdict(Interval(0.65, 0.59, 0.70, 3), (0.50, 0.60)) == UNDECIDED
    assert band_verdict(Interval(0.65, 0.6001, 0.70, 3), (0.50, 0.60)) == FAILS
    assert band_verdict(Interval(0.55, None, None, 1), (0.50, 0.60)) == UNDECIDED


def test_quality_claim_uses_mcd_and_secs_then_val_mel() -> None:
    def claim(full: list[Record], lora: list[Record]):  # noqa: ANN202
        return quality_claim(full + lora, one(full), one(lora))

    c = claim(FULL, LORA)
    assert c.verdict == HOLDS
    assert c.measured == "MCD 96.8% [96.8%, 96.8%], SECS 98.8% [98.8%, 98.8%]"
    c = claim(FULL, edit(LORA, mcd_db=7.0))  # 6.0 / 7.0 = 86%
    assert c.verdict == FAILS
    assert "quality by MCD at 85.7% [85.7%, 85.7%] over 3 pairs and by SECS" in c.sentence
    assert claim(FULL, edit(LORA, secs=0.70)).verdict == FAILS  # SECS 88% fails it alone
    # MCD ratios 0.94, 0.96, 0.98 straddle 95%: undecided though the mean is above
    straddle = edit(LORA, mcd_db=[6.0 / 0.94, 6.0 / 0.96, 6.0 / 0.98])
    c = claim(FULL, straddle)
    assert c.verdict == UNDECIDED and c.measured.startswith("MCD 96.0% [91.0%, 101.0%]")
    # one key undecided, the other failing: the claim fails
    assert claim(FULL, edit(straddle, secs=0.70)).verdict == FAILS
    no_mcd = edit(FULL, mcd_db=None, secs=None)
    c = claim(no_mcd, LORA)
    assert c.verdict == HOLDS and c.measured == "val mel 95.8% [95.8%, 95.8%]"  # 2.3 / 2.4
    c = claim(no_mcd, edit(LORA, val_mel=2.5))
    assert c.verdict == FAILS and c.measured == "val mel 92.0% [92.0%, 92.0%]"
    c = claim(edit(FULL, mcd_db=None, val_mel=None), LORA)
    assert c.verdict == HOLDS and c.measured == "SECS 98.8% [98.8%, 98.8%]"
    nothing = edit(FULL, mcd_db=None, val_mel=None, secs=None)
    assert claim(nothing, LORA).verdict == MISSING


def test_mel_claim_is_never_compared() -> None:
    c = mel_claim(pooled(FULL + LORA))
    assert c.verdict == NOT_COMPARABLE
    assert "3.0000 → 2.4000 (-20.0%) by step 300" in c.sentence
    assert "0.5039 → 0.4236 (-15.9%)" in c.sentence
    assert mel_claim(pooled(FULL + edit(LORA, rank=16))).verdict == MISSING


def test_reference_is_rank8_decoder_else_best_by_mcd() -> None:
    r16 = one(runs("lora r16 all", preset="all", rank=16, mcd_db=6.1))
    r4 = one(runs("lora r4 decoder", rank=4, mcd_db=6.5))
    full, lora = one(FULL), one(LORA)
    assert reference_lora([full, r4, lora, r16], full)[0] is lora
    ref, why = reference_lora([full, r4, r16], full)
    assert ref is r16 and "best by MCD" in why
    assert reference_lora([full], full) == (None, "")


def test_of_several_runs_of_a_setting_the_best_is_compared() -> None:
    # a train.lr sweep: two full rows and two rank-8 decoder rows, told apart by their settings
    full_lr = edit(FULL, variant="full lr=0.001", mcd_db=5.5)
    lora_lr = edit(LORA, variant="lora r8 decoder lr=0.001", mcd_db=5.9)
    claims, ref, why = check_claims(FULL + full_lr + LORA + lora_lr)
    assert ref is not None and ref["variant"] == "lora r8 decoder lr=0.001"
    assert "best of 2 by MCD" in why
    quality = next(c for c in claims if c.key == "c")
    assert quality.measured.startswith("MCD 93.2%")  # full's best 5.5 dB against 5.9, not 6.0


def test_d_frozen_full_is_not_the_reference() -> None:
    frozen = edit(FULL, variant="full (D frozen)", d_policy="frozen", mcd_db=5.0, step_time_s=0.2)
    claims, _, _ = check_claims(frozen + FULL + LORA)
    assert claims[2].measured.startswith("MCD 96.8%")  # 6.0 / 6.2, not 5.0 / 6.2
    assert claims[1].measured.startswith("step 55.0%")  # of 0.30 s, not 0.20 s


def test_claims_pool_voices_at_the_largest_data_size() -> None:
    # voice b at "all" adds three more pairs; the 60 s runs (far worse) are not compared.
    full_b, lora_b = edit(FULL, voice="b"), edit(LORA, voice="b", mcd_db=6.0)
    small = edit(FULL, data_size="60 s") + edit(LORA, data_size="60 s", mcd_db=9.0)
    claims, _, _ = check_claims(small + FULL + LORA + full_b + lora_b)
    # ratios 6/6.2 (x3) and 1.0 (x3): mean 0.98387, s = 0.017668, t_{0.975,5} = 2.570582
    half = 2.570582 * 0.0176680 / math.sqrt(6)
    assert f"MCD 98.4% [{0.983871 - half:.1%}, {0.983871 + half:.1%}]" in claims[2].measured
    assert "over 6 pairs" in claims[2].sentence
    lines = claims_markdown(small + FULL + LORA + full_b + lora_b)
    assert "Compared at data size all, paired by voice and seed over 2 voices" in lines[2]
    # sizes order by seconds, not by text: 120 s is larger than 60 s
    big = edit(FULL + LORA, data_size="120 s")
    assert compared_size(small + big) == "120 s"
    # the largest size with a full run: a LoRA-only "all" does not count
    assert compared_size(small + edit(LORA, data_size="all")) == "60 s"


def test_claims_section_lists_every_claim() -> None:
    claims, ref, _ = check_claims(FULL + LORA + [{**LORA[0], "kind": "mean", "mcd_db": 1.0}])
    assert ref is not None and ref["variant"] == "lora r8 decoder"
    assert [c.key for c in claims] == ["a", "b", "c", "d"]
    assert claims[2].measured.startswith("MCD 96.8%")  # the mean record is not a run
    lines = claims_markdown(FULL + LORA)
    assert lines[0] == "## Claims of the earlier RVC-LoRA attempt"
    assert (
        "| (a) 89% less storage for 10 voices | 90.0% less (3.00 MB vs 30.00 MB) | holds |" in lines
    )
    assert sum(line.startswith("- (") for line in lines) == 4


EPS = 1e-4


def test_storage_threshold_both_sides() -> None:
    full = one(edit(FULL, storage_10_mb=100.0))
    assert storage_claim(full, one(edit(LORA, storage_10_mb=11.0))).verdict == HOLDS  # 89%
    assert storage_claim(full, one(edit(LORA, storage_10_mb=11.0 - EPS))).verdict == HOLDS
    assert storage_claim(full, one(edit(LORA, storage_10_mb=11.0 + EPS))).verdict == FAILS


def test_quality_threshold_both_sides() -> None:
    lora = edit(LORA, mcd_db=10.0)
    full = edit(FULL, secs=None)

    def verdict_at(full_mcd: float) -> str:
        f = edit(full, mcd_db=full_mcd)
        return quality_claim(f + lora, one(f), one(lora)).verdict

    assert verdict_at(9.5) == HOLDS  # exactly 95% on every pair
    assert verdict_at(9.5 + EPS * 10) == HOLDS
    assert verdict_at(9.5 - EPS * 10) == FAILS
