"""Rows -> table records (per run and per variant), ``table.csv``, ``curves.csv``, Markdown.

``table.csv`` is one file with two kinds of record, told apart by the ``kind`` column:
``mean`` (one per variant: means over its seeds, with ``<name>_std`` columns holding the sample
standard deviation, n-1, where two or more seeds measured it) followed by that variant's ``run``
records (one per job, ``_std`` columns empty). ``curves.csv`` holds every validation point
(variant, model, seed, step, val_mel) for the training-curve plot.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rvc_lora.lora.config import PRESETS
from rvc_lora.report.collect import EVAL_KEYS, Row
from rvc_lora.utils.atomic import atomic_write_text

Record = dict[str, Any]
N_VOICES = 10
MISSING = "–"

# Quantities that are measured (vary with the seed): they get a `_std` column.
MEASURED = (
    "step_time_s",
    "peak_memory_mb",
    "wall_time_s",
    "wall_to_best_s",
    "best_step",
    "val_mel_first",
    "val_mel",
    *EVAL_KEYS,
)
NUMERIC = (
    "rank",
    "alpha",
    "lr",
    "n_seeds",
    "trainable_params",
    "generator_params",
    "pct_g",
    "adapter_kb",
    "base_kb",
    "storage_10_mb",
    *MEASURED,
)
TEXT = ("kind", "variant", "model", "mode", "preset", "seed")
SOURCES = ("generator_params_source", "base_source", "wall_to_best_source", "run_dir")
COLUMNS = (
    *TEXT,
    *(c for c in NUMERIC if c not in MEASURED),
    *(c for m in MEASURED for c in (m, f"{m}_std")),
    *SOURCES,
)


def _group_key(row: Row) -> tuple[Any, ...]:
    order = list(PRESETS)
    preset = row.preset or ""
    rank = order.index(preset) if preset in order else len(order)
    return (row.mode != "full", row.model, rank, preset, row.rank or 0, row.flags)


def run_record(row: Row, relative_to: str | os.PathLike[str] | None = None) -> Record:
    """The numbers of one job as a flat record (``kind`` = ``run``)."""
    storage = row.storage_kb(N_VOICES)
    run_dir = os.path.relpath(row.run_dir, relative_to) if relative_to else str(row.run_dir)
    rec: Record = {
        "kind": "run",
        "variant": row.variant,
        "model": row.model,
        "mode": row.mode,
        "preset": row.preset,
        "seed": "" if row.seed is None else str(row.seed),
        "rank": row.rank,
        "alpha": row.alpha,
        "lr": row.lr,
        "n_seeds": 1,
        "trainable_params": row.trainable_g,
        "generator_params": row.generator_params,
        "pct_g": row.pct_g,
        "adapter_kb": row.adapter_kb,
        "base_kb": row.base_kb,
        "storage_10_mb": None if storage is None else storage / 1024,
        "step_time_s": row.step_time_s,
        "peak_memory_mb": row.peak_memory_mb,
        "wall_time_s": row.wall_time_s,
        "wall_to_best_s": row.wall_to_best_s,
        "best_step": row.best_step,
        "val_mel_first": row.val_mel_first,
        "val_mel": row.val_mel,
        **{k: row.eval.get(k) for k in EVAL_KEYS},
        "generator_params_source": row.generator_params_source,
        "base_source": row.base_source,
        "wall_to_best_source": row.wall_to_best_source,
        "run_dir": run_dir.replace(os.sep, "/"),
    }
    return rec


def mean_record(runs: Sequence[Record]) -> Record:
    """Means (and sample standard deviations) over the runs of one variant."""
    first = runs[0]
    keys = ("variant", "model", "mode", "preset", "rank", "alpha", "lr")
    rec: Record = {k: first[k] for k in keys}
    rec["kind"] = "mean"
    seeds = sorted({r["seed"] for r in runs if r["seed"] != ""}, key=_seed_order)
    rec["seed"] = " ".join(seeds)
    rec["n_seeds"] = len(runs)
    for key in NUMERIC:
        if key in rec or key == "n_seeds":
            continue
        values = [r[key] for r in runs if r.get(key) is not None]
        rec[key] = statistics.fmean(values) if values else None
        if key in MEASURED:
            rec[f"{key}_std"] = statistics.stdev(values) if len(values) >= 2 else None
    for key in SOURCES:
        rec[key] = "; ".join(dict.fromkeys(str(r[key]) for r in runs if r[key]))
    return rec


def _seed_order(seed: str) -> tuple[int, Any]:
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


def build_table(
    rows: Iterable[Row], relative_to: str | os.PathLike[str] | None = None
) -> list[Record]:
    """Records sorted full first, then by model, preset (decoder, decoder_flow, all), rank;
    each variant's ``mean`` record followed by its ``run`` records (by seed).

    Args:
        rows: jobs from :func:`rvc_lora.report.collect`.
        relative_to: write ``run_dir`` relative to this folder (the report's own).
    """
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault((*_group_key(row), row.variant), []).append(row)
    records: list[Record] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: (r.seed is None, r.seed or 0, str(r.run_dir)))
        runs = [run_record(r, relative_to) for r in members]
        records += [mean_record(runs), *runs]
    return records


def means(records: Iterable[Record]) -> list[Record]:
    """The per-variant (``kind`` = ``mean``) records."""
    return [r for r in records if r.get("kind") == "mean"]


# --- CSV -------------------------------------------------------------------------------------


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


def to_csv(records: Iterable[Record], columns: Sequence[str] = COLUMNS) -> str:
    """CSV text with ``columns`` (floats to 6 significant digits, ``None`` as empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow([_csv_value(rec.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(records: Iterable[Record], path: str | os.PathLike[str]) -> Path:
    """``table.csv`` written atomically."""
    return atomic_write_text(path, to_csv(records))


def curve_records(rows: Iterable[Row]) -> list[Record]:
    """One record per validation point, for ``curves.csv``."""
    out = []
    for row in sorted(rows, key=lambda r: (_group_key(r), r.seed or 0, str(r.run_dir))):
        seed = "" if row.seed is None else str(row.seed)
        for step, val in row.curve:
            out.append(
                {
                    "variant": row.variant,
                    "model": row.model,
                    "seed": seed,
                    "step": step,
                    "val_mel": val,
                }
            )
    return out


CURVE_COLUMNS = ("variant", "model", "seed", "step", "val_mel")


def read_csv(path: str | os.PathLike[str]) -> list[Record]:
    """Records of a ``table.csv`` or ``curves.csv``: numbers as float, empty cells as ``None``."""
    with open(path, newline="", encoding="utf-8") as f:
        out = []
        for rec in csv.DictReader(f):
            out.append({k: _from_csv(k, v) for k, v in rec.items()})
    return out


def _from_csv(key: str, text: str) -> Any:
    if text == "":
        return None
    if key in TEXT or key in SOURCES:
        return text
    try:
        return float(text)
    except ValueError:
        return text


# --- Markdown --------------------------------------------------------------------------------


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda x: f"{x:.{digits}f}"


MD_COLUMNS: tuple[tuple[str, str, Callable[[float], str] | None], ...] = (
    # (header, record key, number format; None = text)
    ("variant", "variant", None),
    ("preset", "preset", None),
    ("rank", "rank", lambda x: f"{x:.0f}"),
    ("lr", "lr", lambda x: f"{x:g}"),
    ("seed", "seed", None),
    ("trainable params", "trainable_params", lambda x: f"{x:,.0f}"),
    ("% of G", "pct_g", lambda x: f"{x:.2f}%"),
    ("adapter KB", "adapter_kb", _fixed(1)),
    (f"storage {N_VOICES} voices (MB)", "storage_10_mb", _fixed(2)),
    ("step time (s)", "step_time_s", _fixed(3)),
    ("peak mem (MB)", "peak_memory_mb", _fixed(0)),
    ("wall to best (s)", "wall_to_best_s", _fixed(1)),
    ("val mel", "val_mel", _fixed(3)),
    ("MCD (dB)", "mcd_db", _fixed(2)),
    ("F0 RMSE (cents)", "f0_rmse_cents", _fixed(1)),
    ("SECS", "secs_target", _fixed(3)),
    ("PESQ", "pesq", _fixed(2)),
)


def cell(rec: Record, key: str, fmt: Callable[[float], str] | None) -> str:
    """One Markdown cell: ``mean ± std`` where a std exists, ``–`` where nothing was measured."""
    value = rec.get(key)
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if fmt is None:
        return str(value).replace("|", "\\|")
    text = fmt(float(value))
    std = rec.get(f"{key}_std")
    if std is not None and math.isfinite(std):
        text += f" ± {fmt(float(std))}"
    return text


def markdown_table(records: Iterable[Record]) -> list[str]:
    """Lines of the Markdown table of the ``mean`` records (one row per variant)."""
    rows = means(records)
    several_models = len({r["model"] for r in rows}) > 1
    lines = [
        "| " + " | ".join(h for h, _, _ in MD_COLUMNS) + " |",
        "|" + "|".join("---" if fmt is None else "---:" for _, _, fmt in MD_COLUMNS) + "|",
    ]
    for rec in rows:
        cells = [cell(rec, key, fmt) for _, key, fmt in MD_COLUMNS]
        if several_models:
            cells[0] = f"{cells[0]} ({rec['model']})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines
