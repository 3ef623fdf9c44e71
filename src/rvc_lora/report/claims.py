"""The earlier RVC-LoRA attempt's claims, each checked against the measured ``mean`` records.

Every verdict is computed from the numbers: ``held``, ``did not hold``, ``not measurable`` (a
number it needs is missing) or, for the mel-loss figures of another model and data set,
``not comparable``. The LoRA variant compared with full fine-tuning is ``lora r8 decoder`` when
present (the earlier attempt's setting), else the best LoRA variant by MCD, else by val mel;
where several rows qualify (a ``train.lr`` sweep), the best of them, full fine-tuning included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rvc_lora.report.table import N_VOICES, Record, means

HELD, NOT_HELD, MISSING, NOT_COMPARABLE = "held", "did not hold", "not measurable", "not comparable"
STORAGE_REDUCTION = 0.89  # "89% less storage for 10 voices"
TIME_BAND = (0.50, 0.60)  # "50-60% of the training time"
QUALITY_BAND = (0.95, 0.98)  # "95-98% of full fine-tuning quality"
MEL_CLAIM = (0.5039, 0.4236)  # "mel loss 0.5039 -> 0.4236 at rank 8"


@dataclass(frozen=True)
class Claim:
    """One claim beside what was measured; ``sentence`` starts with the verdict."""

    key: str
    claim: str
    measured: str
    verdict: str
    sentence: str


def _best(rows: Sequence[Record]) -> tuple[Record | None, str]:
    """The row with the lowest MCD, else the lowest val mel, else the first; and by what."""
    for key, name in (("mcd_db", "MCD"), ("val_mel", "val mel")):
        scored = [r for r in rows if r.get(key) is not None]
        if scored:
            return min(scored, key=lambda r: r[key]), name
    return (rows[0], "") if rows else (None, "")


def _find_full(rows: Sequence[Record]) -> Record | None:
    # Several full rows (a train.lr sweep): LoRA is held to full fine-tuning at its best.
    return _best([r for r in rows if r["mode"] == "full"])[0]


def reference_lora(rows: Sequence[Record], full: Record | None) -> tuple[Record | None, str]:
    """The LoRA variant the claims are checked with, and why it was chosen."""
    loras = [
        r for r in rows if r["mode"] != "full" and (full is None or r["model"] == full["model"])
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
    """(a) storage of 10 voices: one base plus 10 adapters against 10 full generators."""
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
    return Claim(
        "a",
        claim,
        f"{less:.1%} less ({lora_mb:.2f} MB vs {full_mb:.2f} MB)",
        HELD if held else NOT_HELD,
        f"{'Held' if held else 'Did not hold'}: {what}, {tail}.",
    )


def _band(ratio: float, band: tuple[float, float]) -> str:
    lo, hi = band
    claimed = f"the claimed {lo:.0%}-{hi:.0%}".replace("%-", "-")
    if ratio < lo:
        return f"below {claimed}"
    return f"within {claimed}" if ratio <= hi else f"above {claimed}"


def time_claim(full: Record | None, lora: Record | None) -> Claim:
    """(b) training time: step time ratio decides; wall time to best is reported beside it."""
    claim = "50-60% of the training time"
    if full is None or lora is None:
        return _not_measurable("b", claim, f"needs a full and a LoRA run, got {_have(full, lora)}")
    lora_s, full_s = lora.get("step_time_s"), full.get("step_time_s")
    if lora_s is None or not full_s:
        return _not_measurable("b", claim, "a step time is missing")
    ratio = lora_s / full_s
    held = ratio <= TIME_BAND[1]
    measured = f"step {ratio:.1%}"
    lw, fw = lora.get("wall_to_best_s"), full.get("wall_to_best_s")
    if lw is not None and fw:
        measured += f", wall to best {lw / fw:.1%}"
        wall = f"its wall time to the best validation is {lw / fw:.1%} of full's ({lw:.1f} s vs {fw:.1f} s)"
    else:
        wall = "wall time to the best validation was not measured"
    sentence = (
        f"{'Held' if held else 'Did not hold'}: a {lora['variant']} training step takes "
        f"{lora_s:.3f} s, {ratio:.1%} of a full fine-tuning step ({full_s:.3f} s), "
        f"{_band(ratio, TIME_BAND)}; {wall}."
    )
    return Claim("b", claim, measured, HELD if held else NOT_HELD, sentence)


def quality_ratios(full: Record, lora: Record) -> list[tuple[str, float, str]]:
    """``(measure, ratio, detail)``; ratio 1.0 = as good as full fine-tuning, higher = better.

    MCD (lower is better): full's / LoRA's; where MCD is missing, val mel the same way. SECS
    to the target speaker (higher is better): LoRA's / full's.
    """
    out = []
    for key, name, fmt in (("mcd_db", "MCD", "{:.2f} dB"), ("val_mel", "val mel", "{:.3f}")):
        f, lo = full.get(key), lora.get(key)
        if f is not None and lo:
            detail = f"full {fmt.format(f)} / LoRA {fmt.format(lo)}"
            out.append((name, f / lo, detail))
            break
    f, lo = full.get("secs_target"), lora.get("secs_target")
    if f and lo is not None:
        out.append(("SECS", lo / f, f"LoRA {lo:.3f} / full {f:.3f}"))
    return out


def quality_claim(full: Record | None, lora: Record | None) -> Claim:
    """(c) quality: every available ratio (see :func:`quality_ratios`) must reach 95%."""
    claim = "95-98% of full fine-tuning quality"
    if full is None or lora is None:
        return _not_measurable("c", claim, f"needs a full and a LoRA run, got {_have(full, lora)}")
    ratios = quality_ratios(full, lora)
    if not ratios:
        return _not_measurable("c", claim, "neither MCD nor val mel was measured for both")
    held = all(r >= QUALITY_BAND[0] for _, r, _ in ratios)
    parts = " and ".join(f"{r:.1%} by {name} ({detail})" for name, r, detail in ratios)
    parts = parts.replace(" by ", " of full fine-tuning quality by ", 1)
    tail = "at least the claimed 95%" if held else "below the claimed 95-98%"
    return Claim(
        "c",
        claim,
        ", ".join(f"{name} {r:.1%}" for name, r, _ in ratios),
        HELD if held else NOT_HELD,
        f"{'Held' if held else 'Did not hold'}: {lora['variant']} reaches {parts}, {tail}.",
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


def check_claims(records: Iterable[Record]) -> tuple[list[Claim], Record | None, str]:
    """All four claims, the reference LoRA record and why it was chosen."""
    rows = means(records)
    full = _find_full(rows)
    lora, why = reference_lora(rows, full)
    claims = [
        storage_claim(full, lora),
        time_claim(full, lora),
        quality_claim(full, lora),
        mel_claim(rows),
    ]
    return claims, lora, why


def claims_markdown(records: Iterable[Record]) -> list[str]:
    """The claims section of ``table.md``."""
    claims, lora, why = check_claims(records)
    ref = f"**{lora['variant']}** ({why})" if lora is not None else "none (no LoRA run)"
    lines = [
        "## Claims of the earlier RVC-LoRA attempt",
        "",
        f"LoRA variant compared with full fine-tuning: {ref}.",
        "",
        "| claim | measured here | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| ({c.key}) {c.claim} | {c.measured} | {c.verdict} |" for c in claims]
    lines.append("")
    lines += [f"- ({c.key}) {c.sentence}" for c in claims]
    return lines
