"""Claims, asserted whole: every field and sentence, and every branch that chooses a row.

test_claims.py checks verdicts and key phrases; here the complete text of ``table.md``'s claims
section is pinned, so a changed word, number format, branch or chosen row fails (mutation
testing, docs/mutation.md, showed that phrase checks let such edits through).
"""

from __future__ import annotations

from rvc_lora.report.claims import (
    MISSING,
    Claim,
    check_claims,
    claims_markdown,
    mel_claim,
    quality_claim,
    reference_lora,
    storage_claim,
    time_claim,
)
from tests.report.test_claims import FULL, LORA, rec

HEADER = [
    "## Claims of the earlier RVC-LoRA attempt",
    "",
]
TABLE_HEAD = ["", "| claim | measured here | verdict |", "|---|---|---|"]
CLAIM_A = "89% less storage for 10 voices"
CLAIM_B = "50-60% of the training time"
CLAIM_C = "95-98% of full fine-tuning quality"
CLAIM_D = "mel loss 0.5039 → 0.4236 at rank 8"


def test_markdown_of_a_full_and_a_lora_run_word_for_word() -> None:
    # 1 - 3/30 = 90.0%; 0.165/0.3 = 55.0%; 40/60 = 66.7%; 6.0/6.2 = 96.8%; 0.79/0.8 = 98.8%;
    # 2.4/3 - 1 = -20.0%; 0.4236/0.5039 - 1 = -15.9%
    assert claims_markdown([FULL, LORA]) == HEADER + [
        "LoRA variant compared with full fine-tuning: **lora r8 decoder** (rank 8 on the decoder,"
        " the earlier attempt's setting).",
        *TABLE_HEAD,
        f"| (a) {CLAIM_A} | 90.0% less (3.00 MB vs 30.00 MB) | held |",
        f"| (b) {CLAIM_B} | step 55.0%, wall to best 66.7% | held |",
        f"| (c) {CLAIM_C} | MCD 96.8%, SECS 98.8% | held |",
        f"| (d) {CLAIM_D} | 3.0000 → 2.4000 (-20.0%) | not comparable |",
        "",
        "- (a) Held: one base plus 10 lora r8 decoder adapters take 3.00 MB, 90.0% less than 10"
        " full generators (30.00 MB), at least the claimed 89%.",
        "- (b) Held: a lora r8 decoder training step takes 0.165 s, 55.0% of a full fine-tuning"
        " step (0.300 s), within the claimed 50-60%; its wall time to the best validation is"
        " 66.7% of full's (40.0 s vs 60.0 s).",
        "- (c) Held: lora r8 decoder reaches 96.8% of full fine-tuning quality by MCD (full 6.00 dB"
        " / LoRA 6.20 dB) and 98.8% by SECS (LoRA 0.790 / full 0.800), at least the claimed 95%.",
        "- (d) Not comparable: the claim comes from another model and data; our lora r8 decoder"
        " val mel went 3.0000 → 2.4000 (-20.0%) by step 300, against the claimed 0.5039 → 0.4236"
        " (-15.9%).",
    ]


def _missing_section(got: str) -> list[str]:
    return HEADER + [
        "LoRA variant compared with full fine-tuning: none (no LoRA run).",
        *TABLE_HEAD,
        f"| (a) {CLAIM_A} | – | not measurable |",
        f"| (b) {CLAIM_B} | – | not measurable |",
        f"| (c) {CLAIM_C} | – | not measurable |",
        f"| (d) {CLAIM_D} | – | not measurable |",
        "",
        f"- (a) Not measurable: needs a full and a LoRA run, got {got}.",
        f"- (b) Not measurable: needs a full and a LoRA run, got {got}.",
        f"- (c) Not measurable: needs a full and a LoRA run, got {got}.",
        "- (d) Not measurable: no rank-8 LoRA run with a validation curve.",
    ]


def test_markdown_with_no_run_or_only_full_says_what_is_missing() -> None:
    assert claims_markdown([]) == _missing_section("neither")
    assert claims_markdown([FULL]) == _missing_section("full only")
    # records that are not per-variant means are not rows of the table
    assert claims_markdown([{**FULL, "kind": "run"}, {**LORA, "kind": "run"}]) == (
        _missing_section("neither")
    )


def test_lora_only_names_what_it_has() -> None:
    for fn, key, claim in ((storage_claim, "a", CLAIM_A), (time_claim, "b", CLAIM_B)):
        assert fn(None, LORA) == Claim(
            key, claim, "–", MISSING, "Not measurable: needs a full and a LoRA run, got LoRA only."
        )
    assert quality_claim(None, LORA) == Claim(
        "c", CLAIM_C, "–", MISSING, "Not measurable: needs a full and a LoRA run, got LoRA only."
    )


def test_did_not_hold_sentences_word_for_word() -> None:
    assert storage_claim(FULL, {**LORA, "storage_10_mb": 4.5}) == Claim(
        "a",
        CLAIM_A,
        "85.0% less (4.50 MB vs 30.00 MB)",
        "did not hold",
        "Did not hold: one base plus 10 lora r8 decoder adapters take 4.50 MB, only 85.0% less"
        " than 10 full generators (30.00 MB), short of the claimed 89%.",
    )
    assert time_claim(FULL, {**LORA, "step_time_s": 0.24, "wall_to_best_s": None}) == Claim(
        "b",
        CLAIM_B,
        "step 80.0%",
        "did not hold",
        "Did not hold: a lora r8 decoder training step takes 0.240 s, 80.0% of a full fine-tuning"
        " step (0.300 s), above the claimed 50-60%; wall time to the best validation was not"
        " measured.",
    )
    assert quality_claim(FULL, {**LORA, "mcd_db": 7.0}) == Claim(
        "c",
        CLAIM_C,
        "MCD 85.7%, SECS 98.8%",
        "did not hold",
        "Did not hold: lora r8 decoder reaches 85.7% of full fine-tuning quality by MCD (full"
        " 6.00 dB / LoRA 7.00 dB) and 98.8% by SECS (LoRA 0.790 / full 0.800), below the claimed"
        " 95-98%.",
    )
    val_mel_only = quality_claim(
        {**FULL, "mcd_db": None, "secs_target": None}, {**LORA, "val_mel": 2.5}
    )
    assert val_mel_only.sentence == (
        "Did not hold: lora r8 decoder reaches 92.0% of full fine-tuning quality by val mel"
        " (full 2.300 / LoRA 2.500), below the claimed 95-98%."
    )


def test_missing_numbers_are_named() -> None:
    why = {
        "a": "an artifact or base size is missing",
        "b": "a step time is missing",
        "c": "neither MCD nor val mel was measured for both",
    }
    claims = {
        "a": storage_claim(FULL, {**LORA, "storage_10_mb": None}),
        "b": time_claim({**FULL, "step_time_s": None}, LORA),
        "c": quality_claim(FULL, {**LORA, "mcd_db": None, "val_mel": None, "secs_target": None}),
    }
    text = {"a": CLAIM_A, "b": CLAIM_B, "c": CLAIM_C}
    for key, claim in claims.items():
        assert (claim.key, claim.claim, claim.measured, claim.verdict) == (
            key,
            text[key],
            "–",
            MISSING,
        )
        assert claim.sentence == f"Not measurable: {why[key]}."
    assert storage_claim({**FULL, "storage_10_mb": None}, LORA).verdict == MISSING
    # a full size of 0 cannot be divided by; 0.5 MB is small but a size
    assert storage_claim({**FULL, "storage_10_mb": 0.0}, LORA).verdict == MISSING
    small = storage_claim({**FULL, "storage_10_mb": 0.5}, {**LORA, "storage_10_mb": 0.05})
    assert small.measured == "90.0% less (0.05 MB vs 0.50 MB)"
    assert time_claim({**FULL, "step_time_s": 0.0}, LORA).verdict == MISSING


def test_band_wording_at_the_exact_ends() -> None:
    full = {**FULL, "step_time_s": 1.0}
    for lora_s in (0.5, 0.6):  # 0.5 / 1.0 and 0.6 / 1.0 are the band's own floats
        assert (
            "within the claimed 50-60%"
            in time_claim(full, {**LORA, "step_time_s": lora_s}).sentence
        )


def test_wall_to_best_needs_both_wall_times() -> None:
    no_full_wall = time_claim({**FULL, "wall_to_best_s": None}, LORA)
    assert no_full_wall.measured == "step 55.0%"
    assert no_full_wall.sentence.endswith("; wall time to the best validation was not measured.")
    zero = time_claim({**FULL, "wall_to_best_s": 0.0}, LORA)
    assert zero.measured == "step 55.0%"


def test_reference_choice_and_why() -> None:
    one = reference_lora([FULL, LORA], FULL)
    assert one == (LORA, "rank 8 on the decoder, the earlier attempt's setting")
    # two rank-8 decoder rows without any quality number: the first, and no "best of" tail
    a, b = rec(mcd_db=None), rec(mcd_db=None)
    assert reference_lora([FULL, a, b], FULL) == (
        a,
        "rank 8 on the decoder, the earlier attempt's setting",
    )
    assert reference_lora([FULL, a, b], FULL)[0] is a
    # no r8 decoder: best by val mel when MCD is missing, the first when nothing is measured
    x, y = rec(rank=4, val_mel=2.5), rec(rank=16, val_mel=2.1)
    assert reference_lora([FULL, x, y], FULL) == (y, "no lora r8 decoder run; best by val mel")
    p, q = rec(rank=4), rec(rank=16)
    ref, why = reference_lora([FULL, p, q], FULL)
    assert ref is p and why == "no quality measured; first LoRA variant"
    # a LoRA of another model is not compared with this full run, however good
    other = rec(rank=4, mcd_db=1.0, model="v2_40k")
    assert reference_lora([FULL, p, other], FULL)[0] is p
    assert reference_lora([p, other], None)[0] is other


def test_check_claims_compares_within_the_full_runs_model() -> None:
    other = {**LORA, "model": "v2_40k", "variant": "lora r8 decoder v2", "mcd_db": 1.0}
    claims, ref, why = check_claims([FULL, LORA, other])
    assert ref is LORA and why == "rank 8 on the decoder, the earlier attempt's setting"
    assert [c.verdict for c in claims] == ["held", "held", "held", "not comparable"]
    assert claims == [
        storage_claim(FULL, LORA),
        time_claim(FULL, LORA),
        quality_claim(FULL, LORA),
        mel_claim([FULL, LORA, other]),
    ]


def test_mel_claim_takes_the_decoder_run_with_a_curve() -> None:
    all_r8 = rec(preset="all", val_mel_first=4.0, val_mel=2.0)
    dec = rec(val_mel_first=3.0, val_mel=2.4)
    c = mel_claim([FULL, all_r8, dec])
    assert c == Claim(
        "d",
        CLAIM_D,
        "3.0000 → 2.4000 (-20.0%)",
        "not comparable",
        "Not comparable: the claim comes from another model and data; our lora r8 decoder val mel"
        " went 3.0000 → 2.4000 (-20.0%), against the claimed 0.5039 → 0.4236 (-15.9%).",
    )
    # a decoder run with a best value but no first value has no curve: the other run is used
    no_first = rec(val_mel=2.4)
    assert mel_claim([FULL, no_first, all_r8]).measured == "4.0000 → 2.0000 (-50.0%)"
    full_r8 = {**FULL, "rank": 8, "val_mel_first": 3.0, "val_mel": 1.0}
    assert mel_claim([full_r8]).verdict == MISSING
