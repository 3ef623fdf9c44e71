"""The report folder: ``table.csv``, ``curves.csv``, ``table.md`` and the PNGs, all atomic."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rvc_lora.report.claims import claims_markdown
from rvc_lora.report.collect import Row
from rvc_lora.report.plots import PLOTS, write_plots
from rvc_lora.report.table import (
    CURVE_COLUMNS,
    N_VOICES,
    Record,
    build_table,
    curve_records,
    markdown_table,
    means,
    to_csv,
)
from rvc_lora.utils.atomic import atomic_write_text

WALL_TO_BEST = {
    "the run's clock at that validation": (
        "the run's own clock (time/wall_s in its CSV log) at that validation; runs without it "
        "show – (not estimated)"
    ),
}


def _sources(rows: Sequence[Record], key: str) -> list[str]:
    return list(dict.fromkeys(p for r in rows for p in str(r.get(key) or "").split("; ") if p))


def notes(records: Sequence[Record]) -> list[str]:
    """How each column was computed, including which sources this table's numbers came from."""
    rows = means(records)
    bases = [
        f"{r['model']}: {r['base_kb']:,.1f} KB ({r['base_source']})"
        for r in rows
        if r["mode"] != "full" and r.get("base_kb") is not None
    ]
    bases = list(dict.fromkeys(bases)) or ["none (no LoRA run with a known base)"]
    denominators = _sources(rows, "generator_params_source") or ["unknown"]
    walls = [WALL_TO_BEST.get(s, s) for s in _sources(rows, "wall_to_best_source")]
    return [
        "Notes:",
        "",
        "- trainable params: generator elements that train (the full baseline also trains the "
        "discriminator, which is not stored and not counted); % of G: of the bare generator's "
        f"elements, taken from {'; '.join(denominators)}.",
        f"- storage for N voices: LoRA = one base + N x adapter, full = N x generator.pth; "
        f"base size used: {'; '.join(bases)}.",
        "- step time: median optimisation step; peak mem: CUDA allocator peak on GPU, else the "
        "process's max RSS.",
        "- wall to best: time from the start of training to the validation with the lowest "
        f"val/loss_mel, from {'; '.join(walls) or 'nothing: no run logged its clock (time/wall_s), not measured'}.",
        "- val mel: lowest val/loss_mel over the validations; MCD, F0 RMSE, SECS (speaker "
        "similarity to the target) and PESQ come from eval.json; – = not measured.",
        "- quality ratio (claim c): full's MCD / LoRA's (val mel where MCD is missing) and "
        "LoRA's SECS / full's; 100% = as good as full fine-tuning.",
    ]


def markdown_document(records: Sequence[Record]) -> str:
    """The whole ``table.md``."""
    rows = means(records)
    n_jobs = sum(1 for r in records if r.get("kind") == "run")
    models = ", ".join(dict.fromkeys(r["model"] for r in rows))
    lines = [
        "# Paper table",
        "",
        f"{n_jobs} job{'s' * (n_jobs != 1)}, {len(rows)} variant{'s' * (len(rows) != 1)}, "
        f"model {models}. Values are means over seeds "
        "± sample standard deviation (n-1); per-seed rows are in table.csv (kind = run).",
        "",
        *markdown_table(records),
        "",
        *notes(records),
        "",
        *claims_markdown(records),
        "",
        f"Plots: {', '.join(PLOTS)} (storage for N = 1..50 voices; the table uses N = {N_VOICES}).",
    ]
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[Row], out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the report of ``rows`` into ``out``; returns ``{file name: path}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = build_table(rows, relative_to=out)
    curves = curve_records(rows)
    written = {
        "table.csv": atomic_write_text(out / "table.csv", to_csv(records)),
        "curves.csv": atomic_write_text(out / "curves.csv", to_csv(curves, CURVE_COLUMNS)),
        "table.md": atomic_write_text(out / "table.md", markdown_document(records)),
    }
    written.update({p.name: p for p in write_plots(records, curves, out)})
    return written
