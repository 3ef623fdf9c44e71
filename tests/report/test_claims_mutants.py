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
    pooled,
    quality_claim,
    reference_lora,
    storage_claim,
    time_claim,
)
from tests.report.test_claims import FULL, LORA, edit, one, runs

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
    # 1 - 3/30 = 90.0%; step ratios 0.54, 0.55, 0.56: 0.55 ± 4.302653 * 0.01 / sqrt(3) =
    # [52.5%, 57.5%]; 40/60 = 66.7%; 6.0/6.2 = 96.8%; 0.79/0.8 = 98.8% (equal over the seeds:
    # zero width); 2.4/3 - 1 = -20.0%; 0.4236/0.5039 - 1 = -15.9%
    assert claims_markdown(FULL + LORA) == HEADER + [
        "LoRA variant compared with full fine-tuning: **lora r8 decoder** (rank 8 on the decoder,"
        " the earlier attempt's setting). Compared at data size all, paired by voice and seed"
        " over 1 voice; intervals are 95% t intervals over the pairs.",
        *TABLE_HEAD,
        f"| (a) {CLAIM_A} | 90.0% less (3.00 MB vs 30.00 MB) | holds |",
        f"| (b) {CLAIM_B} | step 55.0% [52.5%, 57.5%], wall to best 66.7% [66.7%, 66.7%] | holds |",
        f"| (c) {CLAIM_C} | MCD 96.8% [96.8%, 96.8%], SECS 98.8% [98.8%, 98.8%] | holds |",
        f"| (d) {CLAIM_D} | 3.0000 → 2.4000 (-20.0%) | not comparable |",
        "",
        "- (a) Holds: one base plus 10 lora r8 decoder adapters take 3.00 MB, 90.0% less than 10"
        " full generators (30.00 MB), at least the claimed 89%.",
        "- (b) Holds: a lora r8 decoder training step takes 55.0% [52.5%, 57.5%] over 3 pairs of a"
        " full fine-tuning step (0.165 s vs 0.300 s on average), within the claimed 50-60%; its"
        " wall time to the best validation is 66.7% [66.7%, 66.7%] over 3 pairs of full's (40.0 s"
        " vs 60.0 s on average).",
        "- (c) Holds: lora r8 decoder reaches full fine-tuning quality by MCD at 96.8% [96.8%,"
        " 96.8%] over 3 pairs and by SECS at 98.8% [98.8%, 98.8%] over 3 pairs, every interval at"
        " or above the claimed 95%.",
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
    assert claims_markdown(FULL) == _missing_section("full only")
    # per-variant means are not runs: nothing to pair
    means = [{**FULL[0], "kind": "mean"}, {**LORA[0], "kind": "mean"}]
    assert claims_markdown(means) == _missing_section("neither")


def test_lora_only_names_what_it_has() -> None:
    lora = one(LORA)
    missing = "Not measurable: needs a full and a LoRA run, got LoRA only."
    assert storage_claim(None, lora) == Claim("a", CLAIM_A, "–", MISSING, missing)
    assert time_claim(LORA, None, lora) == Claim("b", CLAIM_B, "–", MISSING, missing)
    assert quality_claim(LORA, None, lora) == Claim("c", CLAIM_C, "–", MISSING, missing)


def test_fails_and_undecided_sentences_word_for_word() -> None:
    full = one(FULL)
    assert storage_claim(full, one(edit(LORA, storage_10_mb=4.5))) == Claim(
        "a",
        CLAIM_A,
        "85.0% less (4.50 MB vs 30.00 MB)",
        "fails",
        "Fails: one base plus 10 lora r8 decoder adapters take 4.50 MB, only 85.0% less"
        " than 10 full generators (30.00 MB), short of the claimed 89%.",
    )
    slow = edit(LORA, step_time_s=0.24, wall_to_best_s=None)
    assert time_claim(FULL + slow, full, one(slow)) == Claim(
        "b",
        CLAIM_B,
        "step 80.0% [80.0%, 80.0%]",
        "fails",
        "Fails: a lora r8 decoder training step takes 80.0% [80.0%, 80.0%] over 3 pairs of a full"
        " fine-tuning step (0.240 s vs 0.300 s on average), above the claimed 50-60%; wall time"
        " to the best validation was not measured.",
    )
    worse = edit(LORA, mcd_db=7.0)
    assert quality_claim(FULL + worse, full, one(worse)) == Claim(
        "c",
        CLAIM_C,
        "MCD 85.7% [85.7%, 85.7%], SECS 98.8% [98.8%, 98.8%]",
        "fails",
        "Fails: lora r8 decoder reaches full fine-tuning quality by MCD at 85.7% [85.7%, 85.7%]"
        " over 3 pairs and by SECS at 98.8% [98.8%, 98.8%] over 3 pairs, below the claimed"
        " 95-98%.",
    )
    # ratios 0.94, 0.96, 0.98: 0.96 ± 4.302653 * 0.02 / sqrt(3) = [91.0%, 101.0%]
    straddle = edit(LORA, mcd_db=[6.0 / 0.94, 6.0 / 0.96, 6.0 / 0.98], secs=None)
    assert quality_claim(FULL + straddle, full, one(straddle)) == Claim(
        "c",
        CLAIM_C,
        "MCD 96.0% [91.0%, 101.0%]",
        "undecided (intervals overlap)",
        "Undecided (intervals overlap): lora r8 decoder reaches full fine-tuning quality by MCD at"
        " 96.0% [91.0%, 101.0%] over 3 pairs, an interval reaches across 95% or there is one"
        " pair only.",
    )
    no_mcd = edit(FULL, mcd_db=None, secs=None)
    val_mel_only = quality_claim(no_mcd + edit(LORA, val_mel=2.5), one(no_mcd), one(LORA))
    assert val_mel_only.sentence == (
        "Fails: lora r8 decoder reaches full fine-tuning quality by val mel at 92.0% [92.0%,"
        " 92.0%] over 3 pairs, below the claimed 95-98%."
    )


def test_missing_numbers_are_named() -> None:
    why = {
        "a": "an artifact or base size is missing",
        "b": "a step time is missing",
        "c": "neither MCD nor val mel was measured for both",
    }
    full = one(FULL)
    no_size = edit(LORA, storage_10_mb=None)
    no_step = edit(FULL, step_time_s=None)
    no_quality = edit(LORA, mcd_db=None, val_mel=None, secs=None)
    claims = {
        "a": storage_claim(full, one(no_size)),
        "b": time_claim(no_step + LORA, one(no_step), one(LORA)),
        "c": quality_claim(FULL + no_quality, full, one(no_quality)),
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
    assert storage_claim(one(edit(FULL, storage_10_mb=None)), one(LORA)).verdict == MISSING
    # a full size of 0 cannot be divided by; 0.5 MB is small but a size
    assert storage_claim(one(edit(FULL, storage_10_mb=0.0)), one(LORA)).verdict == MISSING
    small = storage_claim(one(edit(FULL, storage_10_mb=0.5)), one(edit(LORA, storage_10_mb=0.05)))
    assert small.measured == "90.0% less (0.05 MB vs 0.50 MB)"
    # a zero full step time cannot be divided by: no pair, not measurable
    zero = edit(FULL, step_time_s=0.0)
    assert time_claim(zero + LORA, one(zero), one(LORA)).verdict == MISSING


def test_band_wording_at_the_exact_ends() -> None:
    full = edit(FULL, step_time_s=1.0)
    for lora_s in (0.5, 0.6):  # 0.5 / 1.0 and 0.6 / 1.0 are the band's own floats
        lora = edit(LORA, step_time_s=lora_s)
        c = time_claim(full + lora, one(full), one(lora))
        assert c.verdict == "holds" and "within the claimed 50-60%" in c.sentence


def test_wall_to_best_needs_both_wall_times() -> None:
    no_full_wall = edit(FULL, wall_to_best_s=None)
    c = time_claim(no_full_wall + LORA, one(no_full_wall), one(LORA))
    assert c.measured == "step 55.0% [52.5%, 57.5%]"
    assert c.sentence.endswith("; wall time to the best validation was not measured.")
    zero = edit(FULL, wall_to_best_s=0.0)
    assert time_claim(zero + LORA, one(zero), one(LORA)).measured == "step 55.0% [52.5%, 57.5%]"


def test_reference_choice_and_why() -> None:
    full, lora = one(FULL), one(LORA)
    assert reference_lora([full, lora], full) == (
        lora,
        "rank 8 on the decoder, the earlier attempt's setting",
    )
    # two rank-8 decoder rows without any quality number: the first, and no "best of" tail
    a, b = one(runs("lora r8 decoder a")), one(runs("lora r8 decoder b"))
    assert reference_lora([full, a, b], full) == (
        a,
        "rank 8 on the decoder, the earlier attempt's setting",
    )
    assert reference_lora([full, a, b], full)[0] is a
    # no r8 decoder: best by val mel when MCD is missing, the first when nothing is measured
    x = one(runs("lora r4 decoder", rank=4, val_mel=2.5))
    y = one(runs("lora r16 decoder", rank=16, val_mel=2.1))
    assert reference_lora([full, x, y], full) == (y, "no lora r8 decoder run; best by val mel")
    p, q = one(runs("lora r4 decoder", rank=4)), one(runs("lora r16 decoder", rank=16))
    ref, why = reference_lora([full, p, q], full)
    assert ref is p and why == "no quality measured; first LoRA variant"
    # a LoRA of another model is not compared with this full run, however good
    other = {**one(runs("lora r4 v2", rank=4, mcd_db=1.0)), "model": "v2_40k"}
    assert reference_lora([full, p, other], full)[0] is p
    assert reference_lora([p, other], None)[0] is other


def test_check_claims_compares_within_the_full_runs_model() -> None:
    other = edit(LORA, model="v2_40k", variant="lora r8 decoder v2", mcd_db=1.0)
    claims, ref, why = check_claims(FULL + LORA + other)
    assert ref == one(LORA) and why == "rank 8 on the decoder, the earlier attempt's setting"
    assert [c.verdict for c in claims] == ["holds", "holds", "holds", "not comparable"]
    everything = FULL + LORA + other
    assert claims == [
        storage_claim(one(FULL), one(LORA)),
        time_claim(everything, one(FULL), one(LORA)),
        quality_claim(everything, one(FULL), one(LORA)),
        mel_claim(pooled(everything)),
    ]


def test_mel_claim_takes_the_decoder_run_with_a_curve() -> None:
    all_r8 = one(runs("lora r8 all", preset="all", val_mel_first=4.0, val_mel=2.0))
    dec = one(runs(val_mel_first=3.0, val_mel=2.4))
    c = mel_claim([one(FULL), all_r8, dec])
    assert c == Claim(
        "d",
        CLAIM_D,
        "3.0000 → 2.4000 (-20.0%)",
        "not comparable",
        "Not comparable: the claim comes from another model and data; our lora r8 decoder val mel"
        " went 3.0000 → 2.4000 (-20.0%), against the claimed 0.5039 → 0.4236 (-15.9%).",
    )
    # a decoder run with a best value but no first value has no curve: the other run is used
    no_first = one(runs(val_mel=2.4))
    assert mel_claim([one(FULL), no_first, all_r8]).measured == "4.0000 → 2.0000 (-50.0%)"
    full_r8 = {**one(FULL), "rank": 8, "val_mel_first": 3.0, "val_mel": 1.0}
    assert mel_claim([full_r8]).verdict == MISSING
