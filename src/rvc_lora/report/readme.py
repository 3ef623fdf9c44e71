"""The README's generated blocks, rendered from the committed files under ``results/``.

Each block sits between ``<!-- NAME:BEGIN -->`` and ``<!-- NAME:END -->`` in README.md and opens
with the command that produced its figures, the date and the machine (from the results file),
so no figure in the README is typed by hand. ``make readme-tables`` rewrites the blocks; a test
renders them and fails when README.md differs.

| block | results file | written by |
|---|---|---|
| ``PAPER_TABLE`` | ``paper_table/table.csv`` + ``run.json`` (+ its PNGs) | ``make reproduce-paper-table`` |
| ``LR_GRID`` | ``lr_grid/table.csv`` + ``run.json`` | ``make lr-grid`` |
| ``LORA_SIZES`` | ``lora_sizes/table.md`` + ``run.json`` | ``scripts/lora_size_table.py`` |
| ``DETERMINISM`` | ``determinism/table.md`` + ``run.json`` | ``scripts/determinism_check.py`` |
| ``DEMO_RESULT`` | ``demo.json`` | ``make demo`` |
| ``DEMO_VOICES`` | ``demo_voices.json`` | ``scripts/demo_voice_similarity.py`` |
| ``BENCH`` | ``bench/bench_*.json`` (one per script) | ``make bench`` |
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rvc_lora.report.claims import claims_markdown
from rvc_lora.report.plots import README_PLOTS
from rvc_lora.report.table import Record, cell_means, markdown_table, read_csv, voices
from rvc_lora.utils.errors import RvcLoraError

RENDERED_BY = "make readme-tables"


class ReadmeError(RvcLoraError, ValueError):
    """A results file is missing or malformed, or README.md lacks a block's markers."""


def _read_json(path: Path, producer: str) -> dict[str, Any]:
    if not path.is_file():
        raise ReadmeError(f"{path}: missing; `{producer}` writes it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReadmeError(f"{path}: not JSON ({err}); rerun `{producer}`") from None
    if not isinstance(data, dict):
        raise ReadmeError(f"{path}: expected a JSON object; rerun `{producer}`")
    for key in ("command", "date", "machine"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ReadmeError(f"{path}: no {key!r}; rerun `{producer}`")
    return data


def _read(path: Path, producer: str) -> Path:
    if not path.is_file():
        raise ReadmeError(f"{path}: missing; `{producer}` writes it")
    return path


def duration(seconds: float) -> str:
    """``222 s``, ``29 min 14 s``, ``1 h 02 min``."""
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def provenance(run: dict[str, Any], source: str) -> str:
    """The opening line of a block: command, date, machine, wall time, source files."""
    took = f", {duration(run['wall_s'])}" if isinstance(run.get("wall_s"), (int, float)) else ""
    line = f"`{run['command']}` on {run['date']} ({run['machine']}{took}); figures from `{source}`."
    if run.get("note"):
        line += f" **Note:** {run['note']}"
    return line


PLOT_TITLES = {
    "quality_vs_data_size.png": "held-out MCD against seconds of training audio",
    "quality_vs_wall.png": "held-out MCD against wall time to the best validation",
    "overtraining.png": "val MCD per step by data size, early stops marked",
}


def paper_table(results: Path) -> list[str]:
    """Pooled table, the "Is LoRA worth it" section, the claims and the plots that exist."""
    from rvc_lora.report.worth import worth_it_markdown

    folder = results / "paper_table"
    run = _read_json(folder / "run.json", "make reproduce-paper-table")
    records = read_csv(_read(folder / "table.csv", "make reproduce-paper-table"))
    seeds = sorted({s for r in cell_means(records) for s in str(r.get("seed") or "").split()})
    names = voices(records) or sorted(
        {str(r["voice"]) for r in records if r.get("voice")} - {"pooled"}
    )
    over = f" and voices {', '.join(names)}" if names else ""
    claims = claims_markdown(records)
    # Only the PNGs the run copied: a link to a missing file would render as a broken image.
    plots = [
        f"![{PLOT_TITLES[name]}](results/paper_table/{name})"
        for name in README_PLOTS
        if (folder / name).is_file()
    ]
    return [
        provenance(run, "results/paper_table/table.csv"),
        "",
        f"Cells are means [95% t interval] over the runs of seeds {', '.join(seeds) or '–'}"
        f"{over}, pooled over voices; held-out scores of the adapter each run kept.",
        "",
        *markdown_table(records),
        "",
        *worth_it_markdown(records),
        "",
        "Claims of the earlier RVC-LoRA attempt, checked by `rvc_lora.report.claims`:",
        *claims[1:],
        *(["", *plots] if plots else []),
    ]


def _lr_name(rec: Record) -> str:
    return re.sub(r"\s*lr=\S+", "", str(rec["variant"]))


def _num(rec: Record, key: str, fmt: str) -> str:
    value = rec.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(float(value), fmt)


def lr_grid(results: Path) -> list[str]:
    folder = results / "lr_grid"
    run = _read_json(folder / "run.json", "make lr-grid")
    rows = cell_means(read_csv(_read(folder / "table.csv", "make lr-grid")))
    names = list(dict.fromkeys(_lr_name(r) for r in rows))
    lrs = sorted({float(r["lr"]) for r in rows if r.get("lr") is not None})
    cells = {(_lr_name(r), float(r["lr"])): r for r in rows if r.get("lr") is not None}
    best = {}
    for name in names:
        fitted = [(r["val_mel"], lr) for (n, lr), r in cells.items() if n == name and r["val_mel"]]
        best[name] = min(fitted)[1] if fitted else None
    lines = [
        provenance(run, "results/lr_grid/table.csv"),
        "",
        "Cells are val mel / MCD (dB) / F0 RMSE (cents) / SECS; bold: the lowest val mel of "
        "each column, which picks the rate.",
        "",
        "| lr | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for lr in lrs:
        row = [f"{lr:g}"]
        for name in names:
            rec = cells.get((name, lr))
            if rec is None:
                row.append("–")
                continue
            text = " / ".join(
                _num(rec, k, f)
                for k, f in (("val_mel", ".3f"), ("mcd_db", ".2f"), ("f0_rmse_cents", ".0f"))
            )
            # SECS: the held-out score (tables from issue 18 on), else eval.json's.
            secs = "secs" if rec.get("secs") is not None else "secs_target"
            text += f" / {_num(rec, secs, '.3f')}"
            row.append(f"**{text}**" if best[name] == lr else text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _table_block(results: Path, name: str, producer: str) -> list[str]:
    """A block that is a results folder's ``table.md`` under its provenance line."""
    folder = results / name
    run = _read_json(folder / "run.json", producer)
    table = _read(folder / "table.md", producer).read_text(encoding="utf-8").rstrip("\n")
    return [provenance(run, f"results/{name}/table.md"), "", *table.splitlines()]


def lora_sizes(results: Path) -> list[str]:
    return _table_block(results, "lora_sizes", "python scripts/lora_size_table.py")


def determinism(results: Path) -> list[str]:
    return _table_block(results, "determinism", "python scripts/determinism_check.py")


def f0_accuracy(results: Path) -> list[str]:
    return _table_block(results, "f0_accuracy", "python scripts/f0_accuracy.py")


def fcpe_crosscheck(results: Path) -> list[str]:
    return _table_block(results, "fcpe_crosscheck", "python scripts/fcpe_crosscheck.py")


def _voice(path: str) -> tuple[str, str]:
    """``data/demo/base/rms/s33.flac`` -> (``rms``, ``s33``)."""
    p = Path(path)
    return p.parent.name, p.stem


def demo_result(results: Path) -> list[str]:
    path = results / "demo.json"
    d = _read_json(path, "make demo")
    try:
        model = d["model"]
        source, sentence = _voice(d["source"])
        target, _ = _voice(d["target_utterance"])
        setup = (
            f"rank {d['rank']:g}, {d['steps']:g} steps, lr {d['lr']:g}, batch {d['batch_size']:g}, "
            f"{d['step_time_s']:.2f} s per step"
        )
        src_row = (
            f"| source (`{source}`, unconverted) | {d['secs_source_to_target']:.3f} | – | – | – |"
        )
        conv_row = (
            f"| converted | **{d['secs_target']:.3f}** | {d['secs_source']:.3f} "
            f"| {d['mcd_db']:.2f} dB | {d['f0_rmse_cents']:.0f} cents |"
        )
        adapter = f"The adapter file is {d['adapter_kb']:.0f} KB."
    except (KeyError, TypeError, ValueError) as err:
        raise ReadmeError(
            f"{path}: missing or malformed figure ({err}); rerun `make demo`"
        ) from None
    return [
        provenance(d, "results/demo.json"),
        "",
        f"Training `{model}`: {setup}. `{source}` saying {sentence} converted into `{target}` with "
        f"`pitch=auto`, scored against `{target}`'s own {sentence}, which no training saw.",
        "",
        f"| | speaker similarity to `{target}` (SECS) | to `{source}` | MCD vs `{target}`'s "
        f"{sentence} | F0 RMSE |",
        "|---|---|---|---|---|",
        src_row,
        conv_row,
        "",
        adapter,
    ]


def demo_voices(results: Path) -> list[str]:
    path = results / "demo_voices.json"
    d = _read_json(path, "python scripts/demo_voice_similarity.py")
    names, secs = d.get("voices"), d.get("secs")
    if not (isinstance(names, list) and isinstance(secs, list) and len(secs) == len(names)):
        raise ReadmeError(f"{path}: no voices x secs matrix; rerun its command")
    lines = [
        provenance(d, "results/demo_voices.json"),
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, row in zip(names, secs):
        cells = ["" if v is None else f"{v:.3f}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def bench(results: Path) -> list[str]:
    folder = results / "bench"
    outputs = sorted(folder.glob("bench_*.json"))
    if not outputs:
        raise ReadmeError(f"{folder}: no bench_*.json; `make bench` writes them")
    lines = []
    for path in outputs:
        run = _read_json(path, "make bench")
        if not isinstance(run.get("output"), str):
            raise ReadmeError(f"{path}: no 'output'; rerun `make bench`")
        source = f"results/bench/{path.name}"
        lines += [provenance(run, source), "", "```text", *run["output"].rstrip("\n").splitlines()]
        lines += ["```", ""]
    return lines[:-1]


BLOCKS: dict[str, Callable[[Path], list[str]]] = {
    "PAPER_TABLE": paper_table,
    "LR_GRID": lr_grid,
    "LORA_SIZES": lora_sizes,
    "DETERMINISM": determinism,
    "F0_ACCURACY": f0_accuracy,
    "FCPE_CROSSCHECK": fcpe_crosscheck,
    "DEMO_RESULT": demo_result,
    "DEMO_VOICES": demo_voices,
    "BENCH": bench,
}


def render_blocks(results: str | os.PathLike[str]) -> dict[str, str]:
    """``{name: block text}`` (markers included) for every generated block."""
    out = {}
    for name, render in BLOCKS.items():
        body = "\n".join(render(Path(results)))
        out[name] = (
            f"<!-- {name}:BEGIN -->\n<!-- generated by `{RENDERED_BY}`: edit the results file, "
            f"not this text -->\n{body}\n<!-- {name}:END -->"
        )
    return out


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- {name}:BEGIN -->.*?<!-- {name}:END -->", re.S)


def blocks_in(text: str, readme: str | os.PathLike[str]) -> dict[str, str]:
    """The current text of every generated block in ``text`` (README.md's content)."""
    found = {}
    for name in BLOCKS:
        hits = _pattern(name).findall(text)
        if len(hits) != 1:
            raise ReadmeError(
                f"{readme}: expected one <!-- {name}:BEGIN --> ... <!-- {name}:END --> pair, "
                f"found {len(hits)}; put exactly one where the block belongs"
            )
        found[name] = hits[0]
    return found


def update_readme(
    readme: str | os.PathLike[str], results: str | os.PathLike[str], check: bool = False
) -> list[str]:
    """Rewrite the generated blocks of ``readme`` from ``results``; with ``check``, write
    nothing. Returns the names of the blocks that differed. Everything is rendered and every
    marker checked before the file is touched, so a failure leaves it as it was."""
    from rvc_lora.utils.atomic import atomic_write_text

    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    current = blocks_in(text, path)
    rendered = render_blocks(results)
    stale = [name for name in BLOCKS if current[name] != rendered[name]]
    if stale and not check:
        for name in stale:
            text = _pattern(name).sub(lambda _, n=name: rendered[n], text)
        atomic_write_text(path, text)
    return stale
