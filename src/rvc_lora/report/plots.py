"""Figures of the paper table, drawn from table records (so ``table.csv`` and ``curves.csv``
alone redraw them).

The three that answer the table's questions (:data:`README_PLOTS`): held-out MCD against seconds
of training audio, against wall time to the best validation, and the overtraining curves (val MCD
per step, early stops marked). Error bars are the cells' 95% t intervals over runs.

Matplotlib's object API with the Agg canvas: no pyplot, so no global figure state and no GUI
backend. Each ``*_figure`` returns a :class:`~matplotlib.figure.Figure`; :func:`write_plots`
saves them as PNGs atomically, :func:`figure_png` gives the bytes (for a notebook).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rvc_lora.report.collect import ALL_DATA
from rvc_lora.report.table import Record, cell_means, size_order
from rvc_lora.utils.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

N_MAX_VOICES = 50


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _largest_size(rows: Sequence[Record]) -> list[Record]:
    """The cells of the largest data size (the one every older table has: ``all``)."""
    if not rows:
        return []
    largest = max((str(r.get("data_size") or ALL_DATA) for r in rows), key=size_order)
    return [r for r in rows if str(r.get("data_size") or ALL_DATA) == largest]


def _yerr(rows: Sequence[Record], key: str) -> list[list[float]]:
    """Asymmetric error bars ``[[below...], [above...]]`` from ``<key>_lo`` / ``<key>_hi``."""
    below = [r[key] - r[f"{key}_lo"] if r.get(f"{key}_lo") is not None else 0.0 for r in rows]
    above = [r[f"{key}_hi"] - r[key] if r.get(f"{key}_hi") is not None else 0.0 for r in rows]
    return [below, above]


def _style(variant: str, mode: str, i: int) -> dict[str, object]:
    """Full fine-tuning in black (D frozen grey and dashed), LoRA in the colour cycle."""
    if mode == "full":
        if "D frozen" in variant:  # grey too: a single point (one data size) shows no dashes
            return {"color": "grey", "linestyle": "--"}
        return {"color": "black", "linestyle": "-"}
    return {"color": f"C{i % 10}"}


def _by_variant(rows: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in rows:
        out.setdefault(str(r["variant"]), []).append(r)
    return out


def _seconds(rec: Record) -> float | None:
    """Seconds of training audio of a cell: measured, else the size label's number."""
    if rec.get("data_s") is not None:
        return float(rec["data_s"])
    return rec.get("max_seconds")


def quality_vs_data_size_figure(records: Iterable[Record]) -> Figure:
    """Held-out MCD against seconds of training audio (log x), pooled cells with 95% interval
    bars: one line per variant (full, full (D frozen), each LoRA rank and preset)."""
    rows = cell_means(records)
    fig, (ax,) = _figure(8, 4.8)
    drawn = False
    for i, (variant, cells) in enumerate(_by_variant(rows).items()):
        pts = [r for r in cells if r.get("mcd_db") is not None and _seconds(r)]
        pts.sort(key=lambda r: _seconds(r))
        if not pts:
            continue
        xs, ys = [_seconds(r) for r in pts], [r["mcd_db"] for r in pts]
        ax.errorbar(xs, ys, yerr=_yerr(pts, "mcd_db"), marker="o", capsize=3, label=variant,
                    **_style(variant, str(pts[0]["mode"]), i))  # fmt: skip
        drawn = True
    if drawn:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        # Ticks at the measured amounts (15, 30, 60 ... s), not powers of ten.
        ticks = sorted(
            {round(s, 1) for r in rows if (s := _seconds(r)) and r.get("mcd_db") is not None}
        )
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8, ncol=2)
    else:
        _empty(ax, "no held-out MCD with a known amount of training audio")
    ax.set_xlabel("training audio (s)")
    ax.set_ylabel("held-out MCD (dB), lower is better")
    ax.set_title("Quality against training audio (pooled over voices, 95% intervals)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def quality_vs_wall_figure(records: Iterable[Record]) -> Figure:
    """Held-out MCD against wall time to the best validation, pooled cells with 95% interval
    bars in both directions: one line per variant through its data sizes (labelled)."""
    rows = cell_means(records)
    fig, (ax,) = _figure(8, 4.8)
    drawn = False
    for i, (variant, cells) in enumerate(_by_variant(rows).items()):
        pts = [r for r in cells if r.get("mcd_db") is not None and r.get("wall_to_best_s")]
        pts.sort(key=lambda r: size_order(str(r.get("data_size") or ALL_DATA)))
        if not pts:
            continue
        xs, ys = [r["wall_to_best_s"] for r in pts], [r["mcd_db"] for r in pts]
        ax.errorbar(xs, ys, xerr=_yerr(pts, "wall_to_best_s"), yerr=_yerr(pts, "mcd_db"),
                    marker="o", capsize=3, label=variant,
                    **_style(variant, str(pts[0]["mode"]), i))  # fmt: skip
        for r, x, y in zip(pts, xs, ys):
            size = str(r.get("data_size") or ALL_DATA)
            ax.annotate(size, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        drawn = True
    if drawn:
        ax.legend(fontsize=8, ncol=2)
    else:
        _empty(ax, "no held-out MCD with a measured wall time to best")
    ax.set_xlabel("wall time to the best validation (s, from the first training step)")
    ax.set_ylabel("held-out MCD (dB), lower is better")
    ax.set_title("Quality against training time (pooled over voices, 95% intervals)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _mean_curve(points: Sequence[tuple[str, float, float]]) -> tuple[list[float], list[float]]:
    """Mean value per step over runs (a run that stopped early leaves the later means)."""
    at: dict[float, list[float]] = {}
    for _, step, value in points:
        at.setdefault(step, []).append(value)
    steps = sorted(at)
    return steps, [sum(at[s]) / len(at[s]) for s in steps]


def overtraining_figure(records: Iterable[Record], curves: Iterable[Record]) -> Figure:
    """Val MCD (val mel where no run logged MCD) against step: one panel per data size, the
    mean curve of each variant over its runs (every voice and seed), and a triangle where a run
    was stopped early, on its variant's mean curve."""
    curves = list(curves)
    key, label = ("val_mcd", "val MCD (dB)")
    if not any(c.get("val_mcd") is not None for c in curves):
        key, label = ("val_mel", "val mel")
    runs = [r for r in records if r.get("kind") == "run"]
    sizes = sorted({str(c.get("data_size") or ALL_DATA) for c in curves}, key=size_order)
    fig, axes = _figure(4.2 * max(len(sizes), 1), 4.5, ncols=max(len(sizes), 1))
    if not sizes:
        _empty(axes[0], "no validation curves (no CSV logs)")
    variants = list(dict.fromkeys(str(c["variant"]) for c in curves))
    for ax, size in zip(axes, sizes):
        for i, variant in enumerate(variants):
            pts = [
                (
                    str(c.get("voice") or "") + str(c.get("seed") or ""),
                    float(c["step"]),
                    float(c[key]),
                )
                for c in curves
                if str(c.get("data_size") or ALL_DATA) == size
                and c["variant"] == variant
                and c.get(key) is not None
            ]
            if not pts:
                continue
            steps, ys = _mean_curve(pts)
            mode = "full" if variant.startswith("full") else "lora"
            ax.plot(steps, ys, marker=".", label=variant, **_style(variant, mode, i))
            stops = [
                float(r["stopped_step"])
                for r in runs
                if r["variant"] == variant
                and str(r.get("data_size") or ALL_DATA) == size
                and r.get("stopped_step") is not None
            ]
            for stop in stops:
                near = min(range(len(steps)), key=lambda j: abs(steps[j] - stop))
                marker = {**_style(variant, mode, i), "linestyle": "none"}
                ax.plot([stop], [ys[near]], marker="v", markersize=9, **marker)
        ax.set_title(f"data {size}")
        ax.set_xlabel("optimisation step")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(label)
    if sizes and variants:
        axes[-1].legend(fontsize=7)
    fig.suptitle("Overtraining: held-out validation per step (mean over runs; ▼ early stop)")
    fig.tight_layout()
    return fig


def quality_figure(records: Iterable[Record]) -> Figure:
    """Val mel and MCD against trainable parameters (log x), pooled cells of the largest data
    size: one line per preset over its ranks, full fine-tuning as a star and a dashed level."""
    from matplotlib.ticker import NullFormatter

    rows = _largest_size(cell_means(records))
    fig, axes = _figure(11, 4.2, ncols=2)
    for ax, key, label in ((axes[0], "val_mel", "val mel"), (axes[1], "mcd_db", "MCD (dB)")):
        drawn = False
        presets = dict.fromkeys(r["preset"] for r in rows if r["mode"] != "full")
        for preset in presets:
            pts = [
                r
                for r in rows
                if r["mode"] != "full"
                and r["preset"] == preset
                and r.get(key) is not None
                and r.get("trainable_params")
            ]
            pts.sort(key=lambda r: r["trainable_params"])
            if not pts:
                continue
            xs, ys = [r["trainable_params"] for r in pts], [r[key] for r in pts]
            ax.errorbar(xs, ys, yerr=_yerr(pts, key), marker="o", capsize=3, label=f"LoRA {preset}")
            for r, x, y in zip(pts, xs, ys):
                ax.annotate(f"r{r['rank']:.0f}", (x, y), textcoords="offset points", xytext=(4, 4))
            drawn = True
        for r in (r for r in rows if r["mode"] == "full" and r.get(key) is not None):
            ax.axhline(r[key], color="black", linestyle="--", linewidth=0.8)
            if r.get("trainable_params"):
                ax.plot([r["trainable_params"]], [r[key]], "k*", markersize=12, label=r["variant"])
            drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short spans
            ax.legend(fontsize=8)
        else:
            _empty(ax, f"{label} not measured")
        ax.set_xlabel("trainable parameters (generator)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Quality against trainable parameters")
    fig.tight_layout()
    return fig


def curves_figure(curves: Iterable[Record]) -> Figure:
    """Val mel against optimisation step, one line per run, one colour per variant."""
    fig, (ax,) = _figure(8, 4.5)
    runs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for c in curves:
        if c.get("val_mel") is None:
            continue
        key = (str(c["variant"]), str(c.get("model") or ""), str(c.get("seed") or ""))
        key = (*key[:2], f"{c.get('voice') or ''} {c.get('data_size') or ''} {key[2]}")
        runs.setdefault(key, []).append((float(c["step"]), float(c["val_mel"])))
    variants = list(dict.fromkeys(v for v, _, _ in runs))
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    labelled: set[str] = set()
    for (variant, _, _), pts in runs.items():
        xs, ys = zip(*sorted(pts))
        label = None if variant in labelled else variant
        labelled.add(variant)
        ax.plot(xs, ys, marker=".", color=colours[variant], label=label)
    if runs:
        ax.legend(fontsize=8, ncol=2)
    else:
        _empty(ax, "no validation curves (no CSV logs)")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("val mel")
    ax.set_title("Training curves (val mel)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def storage_mb(record: Record, n_voices: int) -> float | None:
    """MB to keep ``n_voices`` voices of a ``mean`` record (base + N adapters, or N models)."""
    adapter = record.get("adapter_kb")
    if adapter is None:
        return None
    if record["mode"] == "full":
        return n_voices * adapter / 1024
    base = record.get("base_kb")
    return None if base is None else (base + n_voices * adapter) / 1024


def storage_figure(records: Iterable[Record], n_max: int = N_MAX_VOICES) -> Figure:
    """Storage for N = 1..n_max voices: LoRA variants against full fine-tuning (log y)."""
    fig, (ax,) = _figure(8, 4.5)
    ns = list(range(1, n_max + 1))
    drawn = False
    for i, r in enumerate(_largest_size(cell_means(records))):
        ys = [storage_mb(r, n) for n in ns]
        if any(y is None for y in ys):
            continue
        style = (
            {"color": "black", "linewidth": 2} if r["mode"] == "full" else {"color": f"C{i % 10}"}
        )
        ax.plot(ns, ys, label=r["variant"], **style)
        drawn = True
    if drawn:
        ax.set_yscale("log")
        ax.axvline(10, color="grey", linestyle=":", linewidth=0.8)
        ax.legend(fontsize=8, ncol=2)
    else:
        _empty(ax, "no artifact sizes")
    ax.set_xlabel("number of voices")
    ax.set_ylabel("storage (MB)")
    ax.set_title("Storage: one base + N adapters vs N fine-tuned models")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig))
    return Path(path)


# The figures the README shows (the paper-table script copies them into results/).
README_PLOTS = ("quality_vs_data_size.png", "quality_vs_wall.png", "overtraining.png")
PLOTS = (*README_PLOTS, "quality_vs_params.png", "storage.png")


def write_plots(
    records: Sequence[Record], curves: Sequence[Record], out: str | os.PathLike[str]
) -> list[Path]:
    """The PNGs of :data:`PLOTS` in ``out``."""
    out = Path(out)
    figs = (
        quality_vs_data_size_figure(records),
        quality_vs_wall_figure(records),
        overtraining_figure(records, curves),
        quality_figure(records),
        storage_figure(records),
    )
    return [save_png(fig, out / name) for fig, name in zip(figs, PLOTS)]
