"""report/worth.py: every variant against full, and the generated "Is LoRA worth it" text."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rvc_lora.report.stats import FAILS, HOLDS, UNDECIDED
from rvc_lora.report.worth import (
    FROZEN_D,
    MISSING,
    combined_verdict,
    data_sizes,
    isolation_sentence,
    lora_vs_full,
    worth_it_markdown,
)

Record = dict[str, Any]
NOISE = (-0.01, 0.0, 0.01)  # per seed: 9 pairs (3 voices x 3 seeds), s = sqrt(6e-4 / 8)
HALF = 2.306004 * math.sqrt(6e-4 / 8) / 3  # t_{0.975, 8} * s / sqrt(9) = 0.00666
# Mean quality ratio (full's MCD / the variant's) per (variant, data size), chosen so that
# 15 s gives every verdict: r8 decoder straddles 95%, r4 all lies below, D frozen above.
QUALITY = {
    (FROZEN_D, "15 s"): 1.0,
    ("lora r8 decoder", "15 s"): 0.95,
    ("lora r4 all", "15 s"): 0.90,
    (FROZEN_D, "all"): 1.0,
    ("lora r8 decoder", "all"): 1.0,
    ("lora r4 all", "all"): 0.97,
}
# variant: (mode, step time s, train memory MB, adapter KB)
COSTS = {
    "full": ("full", 1.0, 1000.0, None),
    FROZEN_D: ("full", 0.6, 800.0, None),
    "lora r8 decoder": ("lora", 0.5, 500.0, 120.0),
    "lora r4 all": ("lora", 0.55, 600.0, 240.0),
}


def records(sizes: tuple[str, ...] = ("all", "15 s"), skip: tuple[str, ...] = ()) -> list[Record]:
    """Run records of 3 voices x 3 seeds per (data size, variant), plus a mean record."""
    out: list[Record] = []
    for size in sizes:
        for voice in ("f1", "m1", "whisper"):
            for seed, noise in enumerate(NOISE):
                for variant, (mode, step, mem, kb) in COSTS.items():
                    if variant in skip:
                        continue
                    q = 1.0 if variant == "full" else QUALITY[(variant, size)] + noise
                    secs_q = 1.0 if variant == "full" else QUALITY[(variant, size)] + 0.03
                    out.append(
                        {
                            "kind": "run",
                            "variant": variant,
                            "mode": mode,
                            "d_policy": "frozen" if variant == FROZEN_D else "trained",
                            "voice": voice,
                            "seed": str(seed),
                            "data_size": size,
                            "mcd_db": 5.0 / q,
                            "secs": 0.8 * secs_q,
                            "step_time_s": step,
                            "wall_to_best_s": 100.0 * step,
                            "train_memory_mb": mem,
                            "adapter_kb": kb,
                        }
                    )
    # a mean record that would spoil every ratio if it were paired
    out.append({**out[1], "kind": "mean", "mcd_db": 99.0, "step_time_s": 99.0})
    return out


def cell(comparisons: list[Record], size: str, variant: str) -> Record:
    return next(c for c in comparisons if (c["data_size"], c["variant"]) == (size, variant))


def test_lora_vs_full_gives_each_verdict_with_its_interval() -> None:
    got = lora_vs_full(records())
    # smallest size first; D frozen first, then LoRA variants in record order
    assert [(c["data_size"], c["variant"]) for c in got] == [
        ("15 s", FROZEN_D),
        ("15 s", "lora r8 decoder"),
        ("15 s", "lora r4 all"),
        ("all", FROZEN_D),
        ("all", "lora r8 decoder"),
        ("all", "lora r4 all"),
    ]
    straddle = cell(got, "15 s", "lora r8 decoder")
    assert straddle["quality_mcd_db_ratio"] == pytest.approx(0.95)
    assert straddle["quality_mcd_db_ratio_lo"] == pytest.approx(0.95 - HALF, abs=1e-6)
    assert straddle["quality_mcd_db_ratio_hi"] == pytest.approx(0.95 + HALF, abs=1e-6)
    assert straddle["quality_mcd_db_n"] == 9 and straddle["n_voices"] == 3
    assert straddle["quality_mcd_db_verdict"] == UNDECIDED
    assert straddle["quality_secs_verdict"] == HOLDS  # 98%, no spread
    assert straddle["quality_verdict"] == UNDECIDED
    assert cell(got, "15 s", "lora r4 all")["quality_verdict"] == FAILS
    assert cell(got, "all", "lora r4 all")["quality_verdict"] == HOLDS  # 97% ± 0.7
    assert cell(got, "all", FROZEN_D)["quality_verdict"] == HOLDS
    r8 = cell(got, "all", "lora r8 decoder")
    assert (r8["step_time_ratio"], r8["train_memory_ratio"]) == (0.5, 0.5)
    assert (r8["step_time_ratio_lo"], r8["step_time_n"]) == (0.5, 9)
    assert r8["wall_to_best_ratio"] == pytest.approx(0.5)
    assert r8["adapter_kb"] == 120.0 and r8["mode"] == "lora"


def test_combined_verdict() -> None:
    assert combined_verdict([HOLDS, HOLDS]) == HOLDS
    assert combined_verdict([HOLDS, UNDECIDED]) == UNDECIDED
    assert combined_verdict([UNDECIDED, FAILS]) == FAILS
    assert combined_verdict([]) == MISSING


def test_data_sizes_order_by_seconds_then_all() -> None:
    runs = [{"data_size": s} for s in ("all", "60 s", "120 s", "15 s")]
    assert data_sizes(runs) == ["15 s", "60 s", "120 s", "all"]


def test_worth_it_table_and_sentences_carry_the_figures() -> None:
    lines = worth_it_markdown(records())
    assert lines[0] == "## Is LoRA worth it for RVC?"
    assert "pooled over 3 voices" in lines[2]
    assert (
        "| 15 s | lora r8 decoder | 9 | 95.0% [94.3%, 95.7%] | 98.0% [98.0%, 98.0%] "
        "| undecided (intervals overlap) | 50.0% [50.0%, 50.0%] | 50.0% [50.0%, 50.0%] "
        "| 50.0% [50.0%, 50.0%] | 120.0 |"
    ) in lines
    text = lines[-1]
    assert (
        "LoRA reaches at least 95% of full fine-tuning's held-out quality (the whole 95% "
        "interval of every quality ratio at or above 95%) for lora r8 decoder at all; "
        "lora r4 all at all." in text
    )
    # holds cells: adapters 120-240 KB, steps 50-55%, memory 50-60% of full's
    assert (
        "In those cells the adapters take 120.0-240.0 KB, a step 50.0%-55.0% of full's step "
        "time and training 50.0%-60.0% of full's training memory." in text
    )
    assert (
        "It falls short (a whole interval below 95%) for lora r4 all at 15 s "
        "(MCD 90.0% [89.3%, 90.7%], SECS 93.0% [93.0%, 93.0%])." in text
    )
    assert "The data cannot tell" in text and "lora r8 decoder at 15 s (MCD 95.0%" in text
    # isolation at "all": D frozen 60% of full's step, r8 50%: 40 points from D, 10 from LoRA
    assert (
        "Step time at all: lora r8 decoder takes 50.0% [50.0%, 50.0%] over 9 pairs of full's "
        "and full (D frozen) 60.0% [60.0%, 60.0%] over 9 pairs; of the 50.0 points between "
        "lora r8 decoder and full, freezing D gives 40.0 points and LoRA itself 10.0 points "
        "(lora r8 decoder takes 83.3% [83.3%, 83.3%] over 9 pairs of full (D frozen)'s)." in text
    )
    assert "freezing D gives 20.0 points and LoRA itself 30.0 points" in text  # memory


def test_missing_pieces_are_said() -> None:
    no_frozen = " ".join(worth_it_markdown(records(skip=(FROZEN_D,))))
    assert (
        "The isolating baseline full (D frozen) was not measured at all: the table cannot "
        "split lora r8 decoder's time and memory gain into freezing D and LoRA itself." in no_frozen
    )
    no_mem = [{**r, "train_memory_mb": None} for r in records()]
    assert (
        "Training memory at all was not measured for lora r8 decoder, full (D frozen) and full "
        "alike." in isolation_sentence(no_mem)
    )
    assert worth_it_markdown(records(skip=("full",)))[2] == (
        "Not measured: no variant was paired with full fine-tuning (D trained)."
    )
    no_quality = [{**r, "mcd_db": None, "secs": None} for r in records(sizes=("all",))]
    comparisons = lora_vs_full(no_quality)
    assert {c["quality_verdict"] for c in comparisons} == {MISSING}
    text = worth_it_markdown(no_quality)[-1]
    assert text.startswith("No LoRA variant is shown to reach 95%")
    assert (
        "Held-out quality (MCD, SECS) was not measured for both sides for lora r8 decoder at "
        "all; lora r4 all at all." in text
    )
    only_frozen = worth_it_markdown(records(skip=("lora r8 decoder", "lora r4 all")))[-1]
    assert only_frozen.startswith("No LoRA variant was paired with full fine-tuning")
