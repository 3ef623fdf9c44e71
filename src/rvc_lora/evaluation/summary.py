"""Per-utterance scores -> the flat ``eval.json`` the report reads.

Headline keys (what ``rvc_lora.report`` shows) come from the conversion task when it ran, since
converting another speaker is what the voice is for; PESQ and log-mel L1 only exist for the
time-aligned reconstruction task. Every task's means are also kept under ``recon_*`` and
``conv_*``. A mean skips utterances where the value is undefined (NaN); a key with no defined
value is written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

# Report keys (rvc_lora.report.collect.EVAL_KEYS) and the task each comes from.
CONVERSION_HEADLINE = (
    "mcd_db",
    "f0_rmse_cents",
    "f0_corr",
    "vuv_error",
    "secs_target",
    "secs_source",
)
RECONSTRUCTION_HEADLINE = ("pesq", "log_mel_l1")


def finite_or_none(value: Any) -> Any:
    """``None`` for NaN/inf floats, the value otherwise (so the file stays strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mean_scores(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each key over the rows that define it (finite); NaN where none does."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            sums.setdefault(key, 0.0)
            counts.setdefault(key, 0)
            if value is not None and math.isfinite(value):
                sums[key] += float(value)
                counts[key] += 1
    return {k: (sums[k] / counts[k] if counts[k] else math.nan) for k in sums}


def flat_summary(
    recon: list[dict[str, float]], conv: list[dict[str, float]]
) -> dict[str, float | str | None]:
    """Headline keys, ``recon_*`` and ``conv_*`` means, and ``headline`` (the task the headline
    MCD/F0/SECS come from: ``conversion``, else ``reconstruction`` when no pair was scored)."""
    r, c = mean_scores(recon), mean_scores(conv)
    main = c if conv else r
    out: dict[str, Any] = {k: main.get(k, math.nan) for k in CONVERSION_HEADLINE}
    out.update({k: r.get(k, math.nan) for k in RECONSTRUCTION_HEADLINE})
    out["headline"] = "conversion" if conv else "reconstruction"
    out.update({f"recon_{k}": v for k, v in r.items()})
    out.update({f"conv_{k}": v for k, v in c.items()})
    return {k: finite_or_none(v) for k, v in out.items()}
