"""Intervals over seeds, paired ratios and the holds / fails / undecided verdict.

Pure functions on plain numbers and report records (``kind`` = ``run``), numpy/scipy only, so
the claims, the "Is LoRA worth it" paragraph and the plots all compute a cell's spread the same
way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sp

Record = dict[str, Any]

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided (intervals overlap)"
PAIR_KEYS = ("voice", "data_size", "seed")


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval; ``lo``/``hi`` are None with a single value."""

    mean: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def has_interval(self) -> bool:
        """True when both bounds exist (two or more values)."""
        return self.lo is not None and self.hi is not None

    def bounds(self) -> tuple[float, float]:
        """``(lo, hi)``; ``(mean, mean)`` without an interval."""
        if self.lo is None or self.hi is None:
            return self.mean, self.mean
        return self.lo, self.hi


def _values(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("an interval needs at least one value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"an interval needs finite values, got {arr.tolist()}")
    return arr


def _without_spread(arr: np.ndarray, mean: float) -> Interval | None:
    """One value: no interval. Equal values (a deterministic quantity): exactly that value,
    not a rounding residue of it. Else None: the interval has to be computed."""
    if arr.size == 1:
        return Interval(mean, None, None, 1)
    if arr.min() == arr.max():
        return Interval(float(arr[0]), float(arr[0]), float(arr[0]), int(arr.size))
    return None


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean: ``mean ± t_{(1+level)/2, n-1} * s / sqrt(n)``.

    ``s`` is the sample standard deviation (n-1). With one value there is no interval
    (``lo = hi = None``); with none, ``ValueError``.
    """
    arr = _values(values)
    n, mean = int(arr.size), math.fsum(arr.tolist()) / arr.size
    fixed = _without_spread(arr, mean)
    if fixed is not None:
        return fixed
    half = float(_sp.t.ppf((1.0 + level) / 2.0, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean (resamples drawn by ``Generator(seed)``).

    With one value there is no interval (``lo = hi = None``); with none, ``ValueError``.
    """
    arr = _values(values)
    n, mean = int(arr.size), math.fsum(arr.tolist()) / arr.size
    fixed = _without_spread(arr, mean)
    if fixed is not None:
        return fixed
    rng = np.random.default_rng(seed)
    # [n_boot, n] indices -> n_boot resampled means.
    boot = arr[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(mean, float(lo), float(hi), n)


def _pair_key(rec: Record) -> tuple[str, str, str]:
    # None (an empty CSV cell) pairs with ""; a seed 0 must not, so no `or ""`.
    voice, size, seed = ("" if rec.get(k) is None else str(rec[k]) for k in PAIR_KEYS)
    return voice, size, seed


def paired_ratios(
    runs: Sequence[Record], num: str, den: str, key: str, *, invert: bool = False
) -> list[float]:
    """``num``/``den`` of ``key`` for every (voice, data_size, seed) both variants measured.

    Args:
        runs: report records; only ``kind`` = ``run`` ones are paired.
        num, den: the two ``variant`` names.
        key: the measured record key (``mcd_db``, ``step_time_s`` ...).
        invert: ``den/num`` instead, for lower-is-better keys, so that 1.0 = as good and
            above 1.0 = ``num`` is better.

    Pairs missing the key or with a zero denominator are skipped; the order follows the
    sorted pairing keys so that the result is deterministic. Where one pairing key holds
    several runs of a variant (an lr sweep), the first is used.
    """
    sides: dict[str, dict[tuple[str, str, str], float]] = {num: {}, den: {}}
    for rec in runs:
        if rec.get("kind") != "run" or rec.get("variant") not in sides:
            continue
        value = rec.get(key)
        if value is None or not math.isfinite(float(value)):
            continue
        sides[rec["variant"]].setdefault(_pair_key(rec), float(value))
    out = []
    for pk in sorted(sides[num].keys() & sides[den].keys()):
        top, bottom = sides[num][pk], sides[den][pk]
        if invert:
            top, bottom = bottom, top
        if bottom != 0.0:
            out.append(top / bottom)
    return out


def verdict(interval: Interval, threshold: float, higher_is_better: bool = True) -> str:
    """``HOLDS`` when the whole interval is on the good side of ``threshold`` (a bound equal to
    it counts as good), ``FAILS`` when the whole interval is on the bad side, else
    ``UNDECIDED``; without an interval (one value) always ``UNDECIDED``.
    """
    if not interval.has_interval:
        return UNDECIDED
    lo, hi = interval.bounds()
    if higher_is_better:
        if lo >= threshold:
            return HOLDS
        return FAILS if hi < threshold else UNDECIDED
    if hi <= threshold:
        return HOLDS
    return FAILS if lo > threshold else UNDECIDED
