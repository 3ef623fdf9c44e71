"""The earlier RVC-LoRA attempt's claims, each checked against the measured runs.

The claims are checked at the largest data size present (``all`` when present), pooled over
voices: (a) storage from the variants' artifact sizes (deterministic: holds / fails); (b) time
and (c) quality from ratios paired by (voice, data size, seed) with 95% t intervals over the
pairs: ``holds`` when the interval lies inside the claim, ``fails`` when it lies entirely
outside, else ``undecided (intervals overlap)``; ``not measurable`` where a number is missing
and, for the mel-loss figures of another model and data set, ``not comparable``. Full
fine-tuning is the ``full`` variant with D trained; the LoRA variant is ``lora r8 decoder``
when present (the earlier attempt's setting), else the best LoRA variant by MCD, else by val
mel; where several rows qualify (a ``train.lr`` sweep), the best of them, full included.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rvc_lora.report.stats import FAILS, HOLDS, UNDECIDED, Interval
from rvc_lora.report.stats import verdict as threshold_verdict
from rvc_lora.report.table import N_VOICES, Record
from rvc_lora.report.worth import (
    at_size,
    combined_verdict,
    data_sizes,
    interval_text,
    is_full_trained_d,
    ratio,
    runs_of,
    variants,
)

MISSING, NOT_COMPARABLE = "not measurable", "not comparable"
STORAGE_REDUCTION = 0.89  # "89% less storage for 10 voices"
TIME_BAND = (0.50, 0.60)  # "50-60% of the training time"
QUALITY_BAND = (0.95, 0.98)  # "95-98% of full fine-tuning quality"
MEL_CLAIM = (0.5039, 0.4236)  # "mel loss 0.5039 -> 0.4236 at rank 8"
# Per-variant means of these keys are what the reference choice, (a) and (d) read.
POOLED = ("storage_10_mb", "step_time_s", "wall_to_best_s", "mcd_db", "secs", "val_mel",
          "val_mel_first", "best_step")  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One claim beside what was measured; ``sentence`` starts with the verdict."""

    key: str
    claim: str
    measured: str
    verdict: str
    sentence: str


def _opening(verdict: str) -> str:
    return verdict[0].upper() + verdict[1:] + ": "


def pooled(runs: Sequence[Record]) -> list[Record]:
    """One record per variant (record order): its settings and the means of :data:`POOLED`."""
    out = []
    for name in variants(runs):
        mine = [r for r in runs if r["variant"] == name]
        rec = {k: mine[0].get(k) for k in ("variant", "model", "mode", "preset", "rank")}
        rec["d_policy"] = mine[0].get("d_policy")
        for key in POOLED:
            values = [float(r[key]) for r in mine if r.get(key) is not None]
            rec[key] = statistics.fmean(values) if values else None
        out.append(rec)
    return out


def _best(rows: Sequence[Record]) -> tuple[Record | None, str]:
    """The row with the lowest MCD, else the lowest val mel, else the first; and by what."""
    for key, name in (("mcd_db", "MCD"), ("val_mel", "val mel")):
        scored = [r for r in rows if r.get(key) is not None]
        if scored:
            return min(scored, key=lambda r: r[key]), name
    return (rows[0], "") if rows else (None, "")


def _find_full(rows: Sequence[Record]) -> Record | None:
    # Several full rows (a train.lr sweep): LoRA is held to full fine-tuning at its best.
    return _best([r for r in rows if is_full_trained_d(r)])[0]


def reference_lora(rows: Sequence[Record], full: Record | None) -> tuple[Record | None, str]:
    """The LoRA variant the claims are checked with, and why it was chosen."""
    loras = [
        r
        for r in rows
        if r["mode"] != "full" and (full is None or r.get("model") == full.get("model"))
    ]
    r8 = [r for r in loras if r.get("rank") == 8 and r.get("preset") == "decoder"]
    if r8:
        best, by = _best(r8)
        tail = f" (the best of {len(r8)} by {by})" if len(r8) > 1 and by else ""
        return best, "rank 8 on the decoder, the earlier attempt's setting" + tail
    best, by = _best(loras)
    if best is None:
        return None, ""
    return best, (
        f"no lora r8 decoder run; best by {by}" if by else "no quality measured; first LoRA variant"
    )


def _not_measurable(key: str, claim: str, why: str) -> Claim:
    return Claim(key, claim, "–", MISSING, f"Not measurable: {why}.")


def storage_claim(full: Record | None, lora: Record | None) -> Claim:
    """(a) storage of 10 voices: one base plus 10 adapters against 10 full generators.

    Artifact sizes do not vary with the seed: holds or fails, no interval.
    """
    claim = f"89% less storage for {N_VOICES} voices"
    if full is None or lora is None:
        return _not_measurable("a", claim, f"needs a full and a LoRA run, got {_have(full, lora)}")
    lora_mb, full_mb = lora.get("storage_10_mb"), full.get("storage_10_mb")
    if lora_mb is None or full_mb is None or full_mb <= 0:
        return _not_measurable("a", claim, "an artifact or base size is missing")
    less = 1.0 - lora_mb / full_mb
    held = less >= STORAGE_REDUCTION
    what = (
        f"one base plus {N_VOICES} {lora['variant']} adapters take {lora_mb:.2f} MB, "
        f"{'' if held else 'only '}{less:.1%} less than {N_VOICES} full generators "
        f"({full_mb:.2f} MB)"
    )
    tail = "at least the claimed 89%" if held else "short of the claimed 89%"
    verdict = HOLDS if held else FAILS
    return Claim(
        "a",
        claim,
        f"{less:.1%} less ({lora_mb:.2f} MB vs {full_mb:.2f} MB)",
        verdict,
        f"{_opening(verdict)}{what}, {tail}.",
    )


def band_verdict(iv: Interval, band: tuple[float, float]) -> str:
    """Holds when the whole interval lies at or below the band's top (a LoRA step faster than
    claimed keeps the claim's point: it saves at least that much), fails when it lies entirely
    above it, else undecided; one value (no interval) is undecided."""
    if not iv.has_interval:
        return UNDECIDED
    lo, hi = iv.bounds()
    if hi <= band[1]:
        return HOLDS
    return FAILS if lo > band[1] else UNDECIDED


def _band(iv: Interval, band: tuple[float, float]) -> str:
    lo, hi = band
    claimed = f"the claimed {lo:.0%}-{hi:.0%}".replace("%-", "-")
    a, b = iv.bounds()
    if b < lo:
        return f"below {claimed}"
    if a > hi:
        return f"above {claimed}"
    return f"within {claimed}" if lo <= a and b <= hi else f"overlapping {claimed}"


def time_claim(runs: Sequence[Record], full: Record | None, lora: Record | None) -> Claim:
    """(b) training time: the interval of the paired step-time ratios LoRA / full decides;
    the wall time to the best validation is reported beside it."""
    claim = "50-60% of the training time"
    if full is None or lora is None:
        return _not_measurable("b", claim, f"needs a full and a LoRA run, got {_have(full, lora)}")
    iv = ratio(runs, lora["variant"], full["variant"], "step_time_s")
    if iv is None:
        return _not_measurable("b", claim, "a step time is missing")
    verdict = band_verdict(iv, TIME_BAND)
    measured = f"step {_short(iv)}"
    wall_iv = ratio(runs, lora["variant"], full["variant"], "wall_to_best_s")
    if wall_iv is not None:
        measured += f", wall to best {_short(wall_iv)}"
        wall = f"its wall time to the best validation is {interval_text(wall_iv)} of full's"
        lw, fw = lora.get("wall_to_best_s"), full.get("wall_to_best_s")
        if lw is not None and fw is not None:
            wall += f" ({lw:.1f} s vs {fw:.1f} s on average)"
    else:
        wall = "wall time to the best validation was not measured"
    seconds = ""
    if lora.get("step_time_s") is not None and full.get("step_time_s") is not None:
        seconds = f" ({lora['step_time_s']:.3f} s vs {full['step_time_s']:.3f} s on average)"
    sentence = (
        f"{_opening(verdict)}a {lora['variant']} training step takes {interval_text(iv)} of a "
        f"full fine-tuning step{seconds}, {_band(iv, TIME_BAND)}; {wall}."
    )
    return Claim("b", claim, measured, verdict, sentence)


def _short(iv: Interval) -> str:
    if not iv.has_interval:
        return f"{iv.mean:.1%} (n = 1)"
    return f"{iv.mean:.1%} [{iv.lo:.1%}, {iv.hi:.1%}]"


def quality_ratios(runs: Sequence[Record], full: str, lora: str) -> list[tuple[str, Interval]]:
    """``(measure, interval of the paired ratios)``; 1.0 = as good as full, higher = better.

    MCD (lower is better): full's / LoRA's; where no pair has MCD, val mel the same way. SECS
    to the target speaker (higher is better): LoRA's / full's.
    """
    out = []
    for key, name in (("mcd_db", "MCD"), ("val_mel", "val mel")):
        iv = ratio(runs, lora, full, key, invert=True)
        if iv is not None:
            out.append((name, iv))
            break
    iv = ratio(runs, lora, full, "secs")
    if iv is not None:
        out.append(("SECS", iv))
    return out


def quality_claim(runs: Sequence[Record], full: Record | None, lora: Record | None) -> Claim:
    """(c) quality: every available ratio (see :func:`quality_ratios`) must reach 95% over its
    whole interval to hold; one interval entirely below 95% fails it."""
    claim = "95-98% of full fine-tuning quality"
    if full is None or lora is None:
        return _not_measurable("c", claim, f"needs a full and a LoRA run, got {_have(full, lora)}")
    ratios = quality_ratios(runs, full["variant"], lora["variant"])
    if not ratios:
        return _not_measurable("c", claim, "neither MCD nor val mel was measured for both")
    floor = QUALITY_BAND[0]
    verdict = combined_verdict([threshold_verdict(iv, floor) for _, iv in ratios])
    parts = " and ".join(f"by {name} at {interval_text(iv)}" for name, iv in ratios)
    tail = {
        HOLDS: "every interval at or above the claimed 95%",
        FAILS: "below the claimed 95-98%",
        UNDECIDED: "an interval reaches across 95% or there is one pair only",
    }[verdict]
    return Claim(
        "c",
        claim,
        ", ".join(f"{name} {_short(iv)}" for name, iv in ratios),
        verdict,
        f"{_opening(verdict)}{lora['variant']} reaches full fine-tuning quality {parts}, {tail}.",
    )


def mel_claim(rows: Sequence[Record]) -> Claim:
    """(d) the earlier mel-loss figures: another model and data, so only set side by side."""
    claim = f"mel loss {MEL_CLAIM[0]} → {MEL_CLAIM[1]} at rank 8"
    rank8 = [r for r in rows if r["mode"] != "full" and r.get("rank") == 8]
    rank8.sort(key=lambda r: r.get("preset") != "decoder")
    r = next((x for x in rank8 if x.get("val_mel_first") is not None and x.get("val_mel")), None)
    if r is None:
        return _not_measurable("d", claim, "no rank-8 LoRA run with a validation curve")
    first, best = r["val_mel_first"], r["val_mel"]
    theirs = MEL_CLAIM[1] / MEL_CLAIM[0] - 1.0
    step = "" if r.get("best_step") is None else f" by step {r['best_step']:.0f}"
    return Claim(
        "d",
        claim,
        f"{first:.4f} → {best:.4f} ({best / first - 1:+.1%})",
        NOT_COMPARABLE,
        f"Not comparable: the claim comes from another model and data; our {r['variant']} "
        f"val mel went {first:.4f} → {best:.4f} ({best / first - 1:+.1%}){step}, against the "
        f"claimed {MEL_CLAIM[0]} → {MEL_CLAIM[1]} ({theirs:+.1%}).",
    )


def _have(full: Record | None, lora: Record | None) -> str:
    have = [name for name, r in (("full", full), ("LoRA", lora)) if r is not None]
    return " and ".join(have) + " only" if have else "neither"


def compared_size(runs: Sequence[Record]) -> str:
    """The data size the claims are checked at: the largest with a full (D trained) run
    (``all`` when present), else the largest present; "" for unlabelled runs."""
    sizes = data_sizes(runs)
    with_full = [s for s in sizes if any(is_full_trained_d(r) for r in at_size(runs, s))]
    return (with_full or sizes or [""])[-1]


def check_claims(records: Iterable[Record]) -> tuple[list[Claim], Record | None, str]:
    """All four claims, the reference LoRA (its per-variant means) and why it was chosen.

    Args:
        records: the table's records; the ``run`` ones are used (``mean`` ones are ignored).
    """
    runs = runs_of(records)
    sized = at_size(runs, compared_size(runs))
    rows = pooled(sized)
    full = _find_full(rows)
    lora, why = reference_lora(rows, full)
    claims = [
        storage_claim(full, lora),
        time_claim(sized, full, lora),
        quality_claim(sized, full, lora),
        mel_claim(rows),
    ]
    return claims, lora, why


def claims_markdown(records: Iterable[Record]) -> list[str]:
    """The claims section of ``table.md``."""
    records = list(records)
    claims, lora, why = check_claims(records)
    ref = f"**{lora['variant']}** ({why})" if lora is not None else "none (no LoRA run)"
    runs = runs_of(records)
    size = compared_size(runs)
    voices = {str(r.get("voice") or "") for r in at_size(runs, size)}
    where = f"data size {size}, " if size else ""
    scope = (
        f" Compared at {where}paired by voice and seed over {len(voices)} "
        f"voice{'s' * (len(voices) != 1)}; intervals are 95% t intervals over the pairs."
        if lora is not None
        else ""
    )
    lines = [
        "## Claims of the earlier RVC-LoRA attempt",
        "",
        f"LoRA variant compared with full fine-tuning: {ref}.{scope}",
        "",
        "| claim | measured here | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| ({c.key}) {c.claim} | {c.measured} | {c.verdict} |" for c in claims]
    lines.append("")
    lines += [f"- ({c.key}) {c.sentence}" for c in claims]
    return lines
