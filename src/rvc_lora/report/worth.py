"""The generated "Is LoRA worth it for RVC?" section: every variant against full fine-tuning.

For each data size and each variant other than ``full`` (G and D trained), the ``run`` records
are paired with full's by (voice, data size, seed) and pooled over voices and seeds: quality
ratios (full's MCD / the variant's, the variant's SECS / full's: 1.0 = as good, above = better)
with 95% t intervals and a verdict against 95%, and the cost ratios (step time, wall time to the
best validation, training memory: the variant's / full's, below 1.0 = cheaper). ``full (D
frozen)`` is compared the same way: it isolates what freezing D gains from what LoRA gains.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence

from rvc_lora.report.stats import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Interval,
    Record,
    paired_ratios,
    t_interval,
    verdict,
)

FULL = "full"
FROZEN_D = "full (D frozen)"
THRESHOLD = 0.95
MISSING = "not measurable"
# (record key, name, invert): invert for lower-is-better keys so that the ratio is full/variant.
QUALITY = (("mcd_db", "MCD", True), ("secs", "SECS", False))
COST = (
    ("step_time_s", "step_time"),
    ("wall_to_best_s", "wall_to_best"),
    ("train_memory_mb", "train_memory"),
)
REFERENCE = "lora r8 decoder"  # the earlier attempt's setting


def runs_of(records: Iterable[Record]) -> list[Record]:
    """The per-job (``kind`` = ``run``) records."""
    return [r for r in records if r.get("kind") == "run"]


def _size_seconds(label: str, runs: Sequence[Record]) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*s\s*", label)
    if match:
        return float(match.group(1))
    used = [float(r["data_s"]) for r in runs if r.get("data_s") is not None]
    return statistics.fmean(used) if used else math.inf


def data_sizes(runs: Sequence[Record]) -> list[str]:
    """The ``data_size`` labels present, smallest first, ``all`` last ("" where unlabelled)."""
    labels = dict.fromkeys(str(r.get("data_size") or "") for r in runs)

    def order(label: str) -> tuple[bool, float, str]:
        sized = [r for r in runs if str(r.get("data_size") or "") == label]
        return (label == "all", _size_seconds(label, sized), label)

    return sorted(labels, key=order)


def at_size(runs: Sequence[Record], size: str) -> list[Record]:
    """The runs of one ``data_size`` label."""
    return [r for r in runs if str(r.get("data_size") or "") == size]


def is_full_trained_d(rec: Record) -> bool:
    """Full fine-tuning with D trained (the reference), not ``full (D frozen)``."""
    return rec.get("mode") == "full" and rec.get("d_policy") != "frozen"


def variants(runs: Sequence[Record]) -> list[str]:
    """Variant names in record order (the table's: full first, then by preset and rank)."""
    return list(dict.fromkeys(str(r["variant"]) for r in runs))


def interval_text(iv: Interval | None, unit: str = "pairs") -> str:
    """``98.1% [95.2%, 101.0%] over 9 pairs``; ``98.1% (1 pair, no interval)``; ``–``."""
    if iv is None:
        return "–"
    if not iv.has_interval:
        return f"{iv.mean:.1%} (1 {unit.rstrip('s')}, no interval)"
    return f"{iv.mean:.1%} [{iv.lo:.1%}, {iv.hi:.1%}] over {iv.n} {unit}"


def ratio(
    runs: Sequence[Record], num: str, den: str, key: str, invert: bool = False
) -> Interval | None:
    """t interval of the paired ratios ``num``/``den`` of ``key``; None without a pair."""
    values = paired_ratios(runs, num, den, key, invert=invert)
    return t_interval(values) if values else None


def combined_verdict(verdicts: Sequence[str]) -> str:
    """Every quality key must reach the threshold: holds if all hold, fails if any fails."""
    if not verdicts:
        return MISSING
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else UNDECIDED


def _put(rec: Record, name: str, iv: Interval | None) -> None:
    rec[f"{name}_ratio"] = None if iv is None else iv.mean
    rec[f"{name}_ratio_lo"] = None if iv is None else iv.lo
    rec[f"{name}_ratio_hi"] = None if iv is None else iv.hi
    rec[f"{name}_n"] = 0 if iv is None else iv.n


def _mean(runs: Sequence[Record], variant: str, key: str) -> float | None:
    values = [float(r[key]) for r in runs if r["variant"] == variant and r.get(key) is not None]
    return statistics.fmean(values) if values else None


def compare(runs: Sequence[Record], variant: str, against: str, size: str) -> Record:
    """One comparison record of ``variant`` against ``against`` over ``runs`` (one data size).

    Keys: ``data_size``, ``variant``, ``against``, ``mode``, ``rank``, ``preset``; for each
    quality key ``quality_<key>_ratio`` / ``_lo`` / ``_hi`` / ``_n`` and ``_verdict``; the
    combined ``quality_verdict``; for each cost ``<cost>_ratio`` / ``_lo`` / ``_hi`` / ``_n``;
    ``adapter_kb`` (the variant's mean) and ``n_voices`` (voices with a quality pair).
    """
    first = next(r for r in runs if r["variant"] == variant)
    rec: Record = {"data_size": size, "variant": variant, "against": against}
    rec.update({k: first.get(k) for k in ("mode", "rank", "preset", "d_policy")})
    verdicts = []
    for key, _, invert in QUALITY:
        iv = ratio(runs, variant, against, key, invert)
        _put(rec, f"quality_{key}", iv)
        rec[f"quality_{key}_verdict"] = None if iv is None else verdict(iv, THRESHOLD)
        if iv is not None:
            verdicts.append(rec[f"quality_{key}_verdict"])
    rec["quality_verdict"] = combined_verdict(verdicts)
    for key, name in COST:
        _put(rec, name, ratio(runs, variant, against, key))
    rec["adapter_kb"] = _mean(runs, variant, "adapter_kb")
    names = {variant, against}
    voices = {}
    for r in runs:
        if r["variant"] in names and any(r.get(k) is not None for k, _, _ in QUALITY):
            voices.setdefault(str(r.get("voice") or ""), set()).add(r["variant"])
    rec["n_voices"] = sum(1 for v in voices.values() if v == names)
    return rec


def lora_vs_full(records: Iterable[Record]) -> list[Record]:
    """Every LoRA variant and ``full (D frozen)`` against ``full``, per data size (smallest
    first), pooled over voices and seeds by pairing; see :func:`compare` for the keys."""
    runs = runs_of(records)
    out = []
    for size in data_sizes(runs):
        sized = at_size(runs, size)
        names = variants(sized)
        if FULL not in names:
            continue
        others = [FROZEN_D] if FROZEN_D in names else []
        others += [
            v for v in names if next(r for r in sized if r["variant"] == v).get("mode") != "full"
        ]
        out += [compare(sized, v, FULL, size) for v in others]
    return out


# --- Markdown --------------------------------------------------------------------------------


def _short(rec: Record, name: str) -> str:
    """``98.1% [95.2%, 101.0%]`` (``98.1%`` with one pair, ``–`` unmeasured) from a record."""
    mean, lo, hi = (rec.get(f"{name}_ratio{s}") for s in ("", "_lo", "_hi"))
    if mean is None:
        return "–"
    return f"{mean:.1%}" if lo is None or hi is None else f"{mean:.1%} [{lo:.1%}, {hi:.1%}]"


def _quality_text(rec: Record) -> str:
    return ", ".join(
        f"{label} {_short(rec, f'quality_{key}')}"
        for key, label, _ in QUALITY
        if rec.get(f"quality_{key}_ratio") is not None
    )


def _kb(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table_lines(comparisons: Sequence[Record]) -> list[str]:
    """The data size x variant table of :func:`lora_vs_full`'s records."""
    lines = [
        "| data size | variant | pairs | MCD ratio | SECS ratio | ≥ 95% of full | step time "
        "| wall to best | train memory | adapter KB |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        pairs = max(c[f"quality_{k}_n"] for k, _, _ in QUALITY)
        cells = [
            c["data_size"] or "–",
            c["variant"],
            str(pairs),
            _short(c, "quality_mcd_db"),
            _short(c, "quality_secs"),
            c["quality_verdict"],
            _short(c, "step_time"),
            _short(c, "wall_to_best"),
            _short(c, "train_memory"),
            _kb(c.get("adapter_kb")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _where(cells: Sequence[Record], figures: bool) -> str:
    """``lora r8 decoder at 30 s and all; lora r4 all at all`` (with the quality figures)."""
    by_variant: dict[str, list[Record]] = {}
    for c in cells:
        by_variant.setdefault(c["variant"], []).append(c)
    parts = []
    for variant, group in by_variant.items():
        sizes = [
            (c["data_size"] or "the one data size")
            + (f" ({_quality_text(c)})" if figures and _quality_text(c) else "")
            for c in group
        ]
        joined = sizes[0] if len(sizes) == 1 else ", ".join(sizes[:-1]) + " and " + sizes[-1]
        parts.append(f"{variant} at {joined}")
    return "; ".join(parts)


def _span(cells: Sequence[Record], key: str, fmt: str) -> str | None:
    values = [c[key] for c in cells if c.get(key) is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}-{format(hi, fmt)}"


def _cost_sentence(cells: Sequence[Record]) -> str:
    """Adapter size, step time and training memory over the cells (a span where they differ)."""
    parts = []
    for key, fmt, what in (
        ("adapter_kb", ".1f", "the adapters take {} KB"),
        ("step_time_ratio", ".1%", "a step {} of full's step time"),
        ("train_memory_ratio", ".1%", "training {} of full's training memory"),
    ):
        span = _span(cells, key, fmt)
        parts.append(what.format(span) if span else f"({key} not measured)")
    return "In those cells " + ", ".join(parts[:-1]) + " and " + parts[-1] + "."


def verdict_sentences(comparisons: Sequence[Record]) -> list[str]:
    """Where LoRA holds, fails, is undecided and is not measured, from the comparisons."""
    loras = [c for c in comparisons if c["mode"] != "full"]
    if not loras:
        return ["No LoRA variant was paired with full fine-tuning: nothing to judge."]
    verdicts = (HOLDS, FAILS, UNDECIDED, MISSING)
    group = {v: [c for c in loras if c["quality_verdict"] == v] for v in verdicts}
    out = []
    if group[HOLDS]:
        out.append(
            "LoRA reaches at least 95% of full fine-tuning's held-out quality (the whole 95% "
            f"interval of every quality ratio at or above 95%) for {_where(group[HOLDS], False)}."
        )
        out.append(_cost_sentence(group[HOLDS]))
    else:
        out.append("No LoRA variant is shown to reach 95% of full fine-tuning's held-out quality.")
    if group[FAILS]:
        out.append(f"It falls short (a whole interval below 95%) for {_where(group[FAILS], True)}.")
    if group[UNDECIDED]:
        out.append(
            "The data cannot tell (an interval straddles 95%, or one pair gives no interval) for "
            f"{_where(group[UNDECIDED], True)}."
        )
    if group[MISSING]:
        out.append(
            "Held-out quality (MCD, SECS) was not measured for both sides for "
            f"{_where(group[MISSING], False)}."
        )
    return out


def _points(part: float) -> str:
    return f"{part * 100:.1f} points"


def isolation_sentence(runs: Sequence[Record]) -> str:
    """How much of LoRA's time and memory gain over full G+D comes from freezing D, at the
    largest data size with a full run, for ``lora r8 decoder`` (else the first LoRA variant)."""
    sizes = [s for s in data_sizes(runs) if FULL in variants(at_size(runs, s))]
    if not sizes:
        return "No full fine-tuning run: the gains cannot be split."
    size = sizes[-1]
    sized = at_size(runs, size)
    names = variants(sized)
    loras = [v for v in names if any(r["variant"] == v and r.get("mode") != "full" for r in sized)]
    if not loras:
        return "No LoRA run beside full fine-tuning: the gains cannot be split."
    ref = REFERENCE if REFERENCE in loras else loras[0]
    where = f"at {size}" if size else "in these runs"
    if FROZEN_D not in names:
        return (
            f"The isolating baseline {FROZEN_D} was not measured {where}: the table cannot split "
            f"{ref}'s time and memory gain into freezing D and LoRA itself."
        )
    out = []
    for key, what in (("step_time_s", "Step time"), ("train_memory_mb", "Training memory")):
        lf = ratio(sized, ref, FULL, key)  # LoRA / full G+D
        ff = ratio(sized, FROZEN_D, FULL, key)  # freezing D alone
        lz = ratio(sized, ref, FROZEN_D, key)  # LoRA on top of a frozen D
        if lf is None or ff is None:
            out.append(f"{what} {where} was not measured for {ref}, {FROZEN_D} and full alike.")
            continue
        # Both ratios are of full's: the difference splits exactly into the two steps.
        tail = f" ({ref} takes {interval_text(lz)} of {FROZEN_D}'s)" if lz is not None else ""
        out.append(
            f"{what} {where}: {ref} takes {interval_text(lf)} of full's and {FROZEN_D} "
            f"{interval_text(ff)}; of the {_points(1.0 - lf.mean)} between {ref} and full, "
            f"freezing D gives {_points(1.0 - ff.mean)} and LoRA itself "
            f"{_points(ff.mean - lf.mean)}{tail}."
        )
    return " ".join(out)


def worth_it_markdown(records: Iterable[Record]) -> list[str]:
    """The "Is LoRA worth it for RVC?" section of ``table.md`` and the README."""
    runs = runs_of(records)
    comparisons = lora_vs_full(runs)
    lines = ["## Is LoRA worth it for RVC?", ""]
    if not comparisons:
        return [*lines, "Not measured: no variant was paired with full fine-tuning (D trained)."]
    n_voices = len({str(r.get("voice") or "") for r in runs})
    lines += [
        f"Each variant against full fine-tuning (G and D trained), paired by voice, data size and "
        f"seed and pooled over {n_voices} voice{'s' * (n_voices != 1)}: quality ratios are full's "
        "MCD / the variant's and the variant's SECS / full's (100% = as good), costs the "
        "variant's / full's; [95% t interval over the pairs]. ≥ 95% of full: holds when every "
        "quality interval lies at or above 95%, fails when one lies below, else undecided.",
        "",
        *table_lines(comparisons),
        "",
        " ".join([*verdict_sentences(comparisons), isolation_sentence(runs)]),
    ]
    return lines
