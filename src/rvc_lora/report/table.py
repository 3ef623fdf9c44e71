"""Rows -> table records (per run and per cell), ``table.csv``, ``curves.csv``, Markdown.

A cell is (voice, data size, variant). ``table.csv`` is one file with two kinds of record, told
apart by the ``kind`` column: ``mean`` (one per cell: means over its runs, with ``<name>_lo`` /
``<name>_hi`` holding the 95% t interval and ``<name>_std`` the sample standard deviation, n-1,
where two or more runs measured it) and ``run`` (one per job, those columns empty). The
``pooled`` cells (voice ``"pooled"``) come first and take every voice's runs; with more than one
voice, each voice's cells follow (its ``mean`` then its ``run`` records); with one voice its runs
follow the pooled means directly. ``curves.csv`` holds every validation point (voice, data size,
variant, model, seed, step, val_mel, val_mcd) for the curve plots.
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
from rvc_lora.report.collect import ALL_DATA, EVAL_FALLBACK, EVAL_KEYS, HELDOUT_KEYS, Row
from rvc_lora.report.stats import t_interval
from rvc_lora.utils.atomic import atomic_write_text

Record = dict[str, Any]
N_VOICES = 10
MISSING = "–"
POOLED = "pooled"
LEVEL = 0.95

# eval.json figures with no held-out counterpart, kept as columns for older runs.
EXTRA_EVAL = tuple(
    k for k in EVAL_KEYS if k not in HELDOUT_KEYS and k not in EVAL_FALLBACK.values()
)
# Quantities that are measured (vary with the seed): they get `_lo`, `_hi` and `_std` columns.
MEASURED = (
    "step_time_s",
    "peak_memory_mb",
    "train_memory_mb",
    "wall_time_s",
    "wall_to_best_s",
    "best_step",
    "stopped_step",
    "val_mel_first",
    "val_mel",
    *HELDOUT_KEYS,
    *EXTRA_EVAL,
)
NUMERIC = (
    "rank",
    "alpha",
    "lr",
    "n_runs",
    "n_stopped",
    "data_s",
    "max_seconds",
    "trainable_params",
    "generator_params",
    "pct_g",
    "adapter_kb",
    "base_kb",
    "storage_10_mb",
    *MEASURED,
)
TEXT = ("kind", "voice", "data_size", "variant", "model", "mode", "d_policy", "preset", "seed")
SOURCES = (
    "generator_params_source",
    "base_source",
    "wall_to_best_source",
    "heldout_items",
    "run_dir",
)
COLUMNS = (
    *TEXT,
    *(c for c in NUMERIC if c not in MEASURED),
    *(c for m in MEASURED for c in (m, f"{m}_lo", f"{m}_hi", f"{m}_std")),
    *SOURCES,
)


def size_order(label: str) -> tuple[int, float, str]:
    """Sort key of a data-size label: ``15 s`` < ``30 s`` < ``60 s`` < ``all``."""
    number = label[:-2] if label.endswith(" s") else ""
    try:
        return (0, float(number), label)
    except ValueError:
        return (1 if label == ALL_DATA or not label else 2, 0.0, label)


def voice_order(voice: str) -> tuple[int, str]:
    """Sort key of a voice: ``pooled`` first, then by name."""
    return (0 if voice == POOLED else 1, voice)


def _group_key(row: Row) -> tuple[Any, ...]:
    order = list(PRESETS)
    preset = row.preset or ""
    rank = order.index(preset) if preset in order else len(order)
    # Full with D trained, then full with D frozen, then LoRA by preset and rank.
    return (
        row.mode != "full",
        row.model,
        rank,
        preset,
        row.rank or 0,
        row.flags,
        row.d_policy != "trained",
    )


def run_record(row: Row, relative_to: str | os.PathLike[str] | None = None) -> Record:
    """The numbers of one job as a flat record (``kind`` = ``run``)."""
    storage = row.storage_kb(N_VOICES)
    run_dir = os.path.relpath(row.run_dir, relative_to) if relative_to else str(row.run_dir)
    rec: Record = {
        "kind": "run",
        "voice": row.voice,
        "data_size": row.data_size,
        "variant": row.variant,
        "model": row.model,
        "mode": row.mode,
        "d_policy": row.d_policy,
        "preset": row.preset,
        "seed": "" if row.seed is None else str(row.seed),
        "rank": row.rank,
        "alpha": row.alpha,
        "lr": row.lr,
        "n_runs": 1,
        "n_stopped": int(row.stopped_step is not None) if row.early_stop else None,
        "data_s": row.data_s,
        "max_seconds": row.max_seconds,
        "trainable_params": row.trainable_g,
        "generator_params": row.generator_params,
        "pct_g": row.pct_g,
        "adapter_kb": row.adapter_kb,
        "base_kb": row.base_kb,
        "storage_10_mb": None if storage is None else storage / 1024,
        "step_time_s": row.step_time_s,
        "peak_memory_mb": row.peak_memory_mb,
        "train_memory_mb": row.train_memory_mb,
        "wall_time_s": row.wall_time_s,
        "wall_to_best_s": row.wall_to_best_s,
        "best_step": row.best_step,
        "stopped_step": row.stopped_step,
        "val_mel_first": row.val_mel_first,
        "val_mel": row.val_mel,
        **{k: row.heldout.get(k) for k in HELDOUT_KEYS},
        **{k: row.eval.get(k) for k in EXTRA_EVAL},
        "generator_params_source": row.generator_params_source,
        "base_source": row.base_source,
        "wall_to_best_source": row.wall_to_best_source,
        "heldout_items": row.heldout_items,
        "run_dir": run_dir.replace(os.sep, "/"),
    }
    return rec


def mean_record(runs: Sequence[Record], voice: str | None = None) -> Record:
    """Means, 95% t intervals and sample standard deviations over the runs of one cell.

    Args:
        runs: ``run`` records of one (voice, data size, variant) cell, or of one (data size,
            variant) over every voice for a pooled cell.
        voice: the cell's voice (``"pooled"``); default: the first run's.
    """
    first = runs[0]
    keys = ("variant", "model", "mode", "d_policy", "preset", "rank", "alpha", "lr", "data_size")
    rec: Record = {k: first.get(k) for k in keys}
    rec["kind"] = "mean"
    rec["voice"] = first.get("voice", "") if voice is None else voice
    seeds = sorted({r["seed"] for r in runs if r["seed"] != ""}, key=_seed_order)
    rec["seed"] = " ".join(seeds)
    rec["n_runs"] = len(runs)
    # Runs without an early-stop summary (older runs) say nothing about stopping.
    summaries = [r["n_stopped"] for r in runs if r.get("n_stopped") is not None]
    rec["n_stopped"] = sum(summaries) if summaries else None
    for key in NUMERIC:
        if key in rec:
            continue
        values = [float(r[key]) for r in runs if _finite(r.get(key))]
        rec[key] = statistics.fmean(values) if values else None
        if key in MEASURED:
            interval = t_interval(values, LEVEL) if values else None
            rec[f"{key}_lo"] = None if interval is None else interval.lo
            rec[f"{key}_hi"] = None if interval is None else interval.hi
            rec[f"{key}_std"] = statistics.stdev(values) if len(values) >= 2 else None
    for key in SOURCES:
        rec[key] = "; ".join(dict.fromkeys(str(r[key]) for r in runs if r.get(key)))
    return rec


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seed_order(seed: str) -> tuple[int, Any]:
    return (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)


def _run_order(row: Row) -> tuple[Any, ...]:
    return (row.seed is None, row.seed or 0, str(row.run_dir))


def build_table(
    rows: Iterable[Row], relative_to: str | os.PathLike[str] | None = None
) -> list[Record]:
    """Records of every cell, pooled cells first (see the module docstring for the layout).

    Within a voice, cells sort by data size (15 s, 30 s, 60 s, all), then full (D trained),
    full (D frozen), then by model, preset (decoder, decoder_flow, all) and rank; runs by seed.

    Args:
        rows: jobs from :func:`rvc_lora.report.collect`.
        relative_to: write ``run_dir`` relative to this folder (the report's own).
    """
    rows = list(rows)
    voices = sorted({r.voice for r in rows}, key=voice_order)
    pooled: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        pooled.setdefault((size_order(row.data_size), *_group_key(row), row.variant), []).append(
            row
        )
    records: list[Record] = []
    for key in sorted(pooled):
        members = sorted(pooled[key], key=lambda r: (voice_order(r.voice), *_run_order(r)))
        runs = [run_record(r, relative_to) for r in members]
        records.append(mean_record(runs, voice=POOLED))
        if len(voices) == 1:
            records += runs
    if len(voices) == 1:
        return records
    for voice in voices:
        cells: dict[tuple[Any, ...], list[Row]] = {}
        for row in (r for r in rows if r.voice == voice):
            key = (size_order(row.data_size), *_group_key(row), row.variant)
            cells.setdefault(key, []).append(row)
        for key in sorted(cells):
            runs = [run_record(r, relative_to) for r in sorted(cells[key], key=_run_order)]
            records += [mean_record(runs), *runs]
    return records


def means(records: Iterable[Record]) -> list[Record]:
    """The per-cell (``kind`` = ``mean``) records."""
    return [r for r in records if r.get("kind") == "mean"]


def cell_means(records: Iterable[Record], voice: str | None = POOLED) -> list[Record]:
    """The ``mean`` records of one voice (default the pooled cells); ``None``: all of them.

    Tables written before voices existed have no ``voice`` column: all their means are returned.
    """
    rows = means(records)
    if voice is None or not any(r.get("voice") for r in rows):
        return rows
    return [r for r in rows if r.get("voice") == voice]


def voices(records: Iterable[Record]) -> list[str]:
    """The voices of the per-voice cells (not ``pooled``), in table order."""
    return list(
        dict.fromkeys(
            r["voice"] for r in means(records) if r.get("voice") not in (None, "", POOLED)
        )
    )


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
    """One record per validation point (val mel and val MCD at that step), for ``curves.csv``."""
    out = []
    order = lambda r: (voice_order(r.voice), size_order(r.data_size), _group_key(r), *_run_order(r))  # noqa: E731
    for row in sorted(rows, key=order):
        seed = "" if row.seed is None else str(row.seed)
        mel, mcd = dict(row.curve), dict(row.mcd_curve)
        for step in sorted(mel.keys() | mcd.keys()):
            out.append(
                {
                    "voice": row.voice,
                    "data_size": row.data_size,
                    "variant": row.variant,
                    "model": row.model,
                    "seed": seed,
                    "step": step,
                    "val_mel": mel.get(step),
                    "val_mcd": mcd.get(step),
                }
            )
    return out


CURVE_COLUMNS = ("voice", "data_size", "variant", "model", "seed", "step", "val_mel", "val_mcd")


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


def _stopped(rec: Record) -> str:
    """``2/3 at 80``: runs the early stop ended, of all, and their mean step."""
    n, stopped = rec.get("n_runs"), rec.get("n_stopped")
    if not n or stopped is None:
        return MISSING
    step = rec.get("stopped_step")
    return f"{stopped:.0f}/{n:.0f}" + ("" if step is None else f" at {step:.0f}")


MD_COLUMNS: tuple[tuple[str, str, Callable[[float], str] | None], ...] = (
    # (header, record key, number format; None = text)
    ("voice", "voice", None),
    ("data", "data_size", None),
    ("audio (s)", "data_s", _fixed(0)),
    ("variant", "variant", None),
    ("lr", "lr", lambda x: f"{x:g}"),
    ("runs", "n_runs", lambda x: f"{x:.0f}"),
    ("% of G", "pct_g", lambda x: f"{x:.2f}%"),
    ("adapter KB", "adapter_kb", _fixed(1)),
    (f"storage {N_VOICES} voices (MB)", "storage_10_mb", _fixed(2)),
    ("step time (s)", "step_time_s", _fixed(3)),
    ("train mem (MB)", "train_memory_mb", _fixed(0)),
    ("wall to best (s)", "wall_to_best_s", _fixed(1)),
    ("MCD (dB)", "mcd_db", _fixed(2)),
    ("F0 RMSE (cents)", "f0_rmse_cents", _fixed(1)),
    ("SECS", "secs", _fixed(3)),
    ("mel L1", "mel_l1", _fixed(3)),
    ("early stop", "stopped_step", None),
)
_CUSTOM: dict[str, Callable[[Record], str]] = {"stopped_step": _stopped}


def cell(rec: Record, key: str, fmt: Callable[[float], str] | None) -> str:
    """One Markdown cell: ``mean [lo, hi]`` where an interval exists, ``–`` where nothing was
    measured."""
    if key in _CUSTOM:
        return _CUSTOM[key](rec)
    value = rec.get(key)
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if fmt is None:
        return str(value).replace("|", "\\|")
    text = fmt(float(value))
    lo, hi = rec.get(f"{key}_lo"), rec.get(f"{key}_hi")
    if _finite(lo) and _finite(hi):
        text += f" [{fmt(float(lo))}, {fmt(float(hi))}]"
    return text


def markdown_table(records: Iterable[Record], voice: str | None = POOLED) -> list[str]:
    """Lines of the Markdown table of one voice's ``mean`` records (default: the pooled cells;
    ``None``: every cell), one row per cell. The voice column shows only for ``None``."""
    return _markdown(cell_means(records, voice), with_voice=voice is None)


def voice_table(records: Iterable[Record]) -> list[str]:
    """Lines of the Markdown table of every voice's own cells (no pooled ones), voice first;
    empty when the table holds one voice (its cells are the pooled ones)."""
    rows = [r for r in means(records) if r.get("voice") not in (None, "", POOLED)]
    return _markdown(rows, with_voice=True) if rows else []


def _markdown(rows: Sequence[Record], with_voice: bool) -> list[str]:
    several_models = len({r["model"] for r in rows}) > 1
    columns = [c for c in MD_COLUMNS if with_voice or c[1] != "voice"]
    lines = [
        "| " + " | ".join(h for h, _, _ in columns) + " |",
        "|" + "|".join("---" if fmt is None else "---:" for _, _, fmt in columns) + "|",
    ]
    at = [k for _, k, _ in columns].index("variant")
    for rec in rows:
        cells = [cell(rec, key, fmt) for _, key, fmt in columns]
        if several_models:
            cells[at] = f"{cells[at]} ({rec['model']})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines
