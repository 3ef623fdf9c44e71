"""The report folder: ``table.csv``, ``curves.csv``, ``table.md`` and the PNGs, all atomic.

``table.md``: the pooled table (every voice's runs per data size and variant), the per-voice
table, notes on how each column was measured, the generated "Is LoRA worth it" section, the
earlier attempt's claims and the list of plots.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rvc_lora.report.claims import claims_markdown
from rvc_lora.report.collect import EARLY_STOP_SOURCE, Row
from rvc_lora.report.plots import PLOTS, write_plots
from rvc_lora.report.table import (
    CURVE_COLUMNS,
    N_VOICES,
    Record,
    build_table,
    cell_means,
    curve_records,
    markdown_table,
    means,
    to_csv,
    voice_table,
    voices,
)
from rvc_lora.report.worth import worth_it_markdown
from rvc_lora.utils.atomic import atomic_write_text

WALL_TO_BEST = {
    "the run's clock at that validation": (
        "the run's own clock (time/wall_s in its CSV log) at that validation; runs without it "
        "show – (not estimated)"
    ),
    EARLY_STOP_SOURCE: (
        "the early-stop callback's summary (best_wall_s in metrics.json): seconds from the "
        "first training step to the validation whose adapter the run kept"
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
        "- cells: (voice, data size, variant); the pooled table takes every voice's runs of a "
        "data size and variant together. Values are means over runs with the 95% t interval "
        "over runs, `mean [lo, hi]` (none with one run); per-run rows are in table.csv "
        "(kind = run).",
        "- data: `data.max_seconds` (a subset of the training slices by seed, nested across "
        "sizes); audio (s): seconds of training audio the runs used.",
        "- trainable params: generator elements that train (the full baseline also trains the "
        "discriminator, which is not stored and not counted); % of G: of the bare generator's "
        f"elements, taken from {'; '.join(denominators)}.",
        f"- storage for N voices: LoRA = one base + N x adapter, full = N x generator.pth; "
        f"base size used: {'; '.join(bases)}.",
        "- time and memory count training only, from the first training step (data "
        "preparation excluded). step time: median optimisation step; train mem: peak memory "
        "(CUDA allocator peak on GPU, else the process's RSS) minus the RSS measured at the "
        "first training step, what training itself added.",
        "- wall to best: time from the first training step to the best validation, from "
        f"{'; '.join(walls) or 'nothing: no run logged its clock (time/wall_s), not measured'}.",
        "- quality (MCD, F0 RMSE, SECS = speaker similarity to the target's own utterance, "
        "mel L1): final held-out scores of the adapter the run kept, on the target voice's "
        "held-out sentences not used for early stopping (eval.json for runs before held-out "
        "sets); – = not measured.",
        "- early stop: runs the overtraining detector stopped, of all runs, at the mean step "
        "it stopped.",
    ]


def markdown_document(records: Sequence[Record]) -> str:
    """The whole ``table.md``."""
    pooled = cell_means(records)
    n_jobs = sum(1 for r in records if r.get("kind") == "run")
    models = ", ".join(dict.fromkeys(r["model"] for r in pooled))
    names = voices(records) or list(
        dict.fromkeys(str(r["voice"]) for r in records if r.get("kind") == "run" and r.get("voice"))
    )
    over = ", ".join(names) if names else "one target voice"
    lines = [
        "# Paper table",
        "",
        f"{n_jobs} job{'s' * (n_jobs != 1)}, {len(pooled)} cell{'s' * (len(pooled) != 1)} "
        f"(data size x variant), model {models}, voices: {over}.",
        "",
        "## Pooled over voices",
        "",
        *markdown_table(records),
    ]
    per_voice = voice_table(records)
    if per_voice:
        lines += ["", "## Per voice", "", *per_voice]
    lines += [
        "",
        *notes(records),
        "",
        *worth_it_markdown(records),
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
