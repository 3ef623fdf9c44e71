"""report/stats.py: intervals against known cases, verdict boundaries, pairing."""

from __future__ import annotations

import math

import pytest

from rvc_lora.report.stats import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Interval,
    bootstrap_interval,
    paired_ratios,
    t_interval,
    verdict,
)


def test_t_interval_known_case() -> None:
    # mean 2, s = 1, t_{0.975, 2} = 4.302653 (tables).
    iv = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert iv.n == 3
    assert iv.mean == pytest.approx(2.0, abs=1e-12)
    assert iv.lo == pytest.approx(2.0 - half, abs=1e-6)
    assert iv.hi == pytest.approx(2.0 + half, abs=1e-6)


def test_t_interval_level_and_degenerate_sizes() -> None:
    # 90%: t_{0.95, 3} = 2.353363; values 1..4: mean 2.5, s = sqrt(5/3).
    iv = t_interval([1.0, 2.0, 3.0, 4.0], level=0.90)
    half = 2.353363 * math.sqrt(5 / 3) / 2.0
    assert (iv.lo, iv.hi) == (
        pytest.approx(2.5 - half, abs=1e-6),
        pytest.approx(2.5 + half, abs=1e-6),
    )
    assert t_interval([7.0]) == Interval(7.0, None, None, 1)
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])
    const = t_interval([3.0, 3.0, 3.0])
    assert const.lo == const.hi == 3.0


def test_bootstrap_interval() -> None:
    const = bootstrap_interval([0.5, 0.5, 0.5, 0.5])
    assert const.lo == const.hi == 0.5
    sample = [1.0, 4.0, 2.0, 8.0, 5.0, 3.0]
    iv = bootstrap_interval(sample, seed=3)
    assert iv.mean == pytest.approx(23 / 6)
    assert min(sample) < iv.lo < iv.mean < iv.hi < max(sample)
    # Same seed -> same interval; a narrower level -> a narrower interval.
    assert bootstrap_interval(sample, seed=3) == iv
    narrow = bootstrap_interval(sample, level=0.5, seed=3)
    assert iv.lo < narrow.lo < narrow.hi < iv.hi
    assert bootstrap_interval([2.0]) == Interval(2.0, None, None, 1)
    with pytest.raises(ValueError):
        bootstrap_interval([])


@pytest.mark.parametrize(
    ("lo", "hi", "higher", "expected"),
    [
        (0.95, 1.2, True, HOLDS),  # lo == threshold counts as good
        (0.9499, 1.2, True, UNDECIDED),
        (0.80, 0.9499, True, FAILS),  # hi just below
        (0.80, 0.95, True, UNDECIDED),  # hi == threshold is not entirely bad
        (0.90, 1.00, True, UNDECIDED),
        # lower is better mirrors: hi == threshold -> holds, lo just above -> fails.
        (0.80, 0.95, False, HOLDS),
        (0.80, 0.9501, False, UNDECIDED),
        (0.9501, 1.2, False, FAILS),
        (0.95, 1.2, False, UNDECIDED),
    ],
)
def test_verdict_boundaries(lo: float, hi: float, higher: bool, expected: str) -> None:
    assert verdict(Interval((lo + hi) / 2, lo, hi, 3), 0.95, higher_is_better=higher) == expected


def test_verdict_without_interval_is_undecided() -> None:
    assert verdict(Interval(2.0, None, None, 1), 0.95) == UNDECIDED
    assert verdict(Interval(0.1, None, None, 1), 0.95, higher_is_better=False) == UNDECIDED


def _run(variant: str, seed: int, voice: str = "a", size: str = "all", **kw: float) -> dict:
    return {"kind": "run", "variant": variant, "seed": str(seed), "voice": voice,
            "data_size": size, **kw}  # fmt: skip


def test_paired_ratios_pairs_by_voice_size_seed() -> None:
    runs = [
        _run("full", 0, mcd_db=4.0, step_time_s=2.0),
        _run("lora", 0, mcd_db=5.0, step_time_s=1.0),
        _run("full", 1, mcd_db=6.0, step_time_s=4.0),
        _run("lora", 1, mcd_db=3.0),  # no step time: skipped for that key only
        _run("full", 0, voice="b", mcd_db=2.0, step_time_s=0.0),
        _run("lora", 0, voice="b", mcd_db=4.0, step_time_s=1.0),  # zero denominator: skipped
        _run("lora", 0, size="15 s", mcd_db=1.0, step_time_s=1.0),  # no full partner
        {**_run("lora", 1, mcd_db=99.0), "kind": "mean"},  # mean records never pair
    ]
    assert paired_ratios(runs, "lora", "full", "step_time_s") == [0.5]
    # Sorted by (voice, data_size, seed): a/all/0, a/all/1, b/all/0.
    assert paired_ratios(runs, "lora", "full", "mcd_db") == [1.25, 0.5, 2.0]
    assert paired_ratios(runs, "lora", "full", "mcd_db", invert=True) == [0.8, 2.0, 0.5]
    assert paired_ratios(runs, "full", "lora", "step_time_s") == [2.0, 0.0]


def test_equal_values_give_exactly_that_value() -> None:
    # 0.79 / 0.8 three times: a rounding residue in the mean or s must not widen the interval
    # below the value (a 95% threshold at exactly the value would turn undecided).
    x = 0.79 / 0.8
    assert t_interval([x, x, x]) == Interval(x, x, x, 3)
    assert bootstrap_interval([x, x, x]) == Interval(x, x, x, 3)
    assert verdict(t_interval([0.95] * 3), 0.95) == HOLDS


def test_seed_zero_and_empty_cells_pair() -> None:
    # numbers read back from a CSV: seed 0.0 must not collapse into the empty seed
    runs = [
        {"kind": "run", "variant": "a", "voice": None, "data_size": None, "seed": 0.0, "k": 1.0},
        {"kind": "run", "variant": "b", "voice": "", "data_size": "", "seed": 0.0, "k": 2.0},
        {"kind": "run", "variant": "a", "voice": None, "data_size": None, "seed": "", "k": 3.0},
        {"kind": "run", "variant": "b", "voice": "", "data_size": "", "seed": None, "k": 4.0},
    ]
    assert paired_ratios(runs, "a", "b", "k") == [0.75, 0.5]
