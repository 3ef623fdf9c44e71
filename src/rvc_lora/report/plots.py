"""Figures of the paper table, drawn from table records (so ``table.csv`` alone redraws them).

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

from rvc_lora.report.table import Record, means
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


def quality_figure(records: Iterable[Record]) -> Figure:
    """Val mel and MCD against trainable parameters (log x): one line per preset over its
    ranks, full fine-tuning as a star and a dashed level."""
    from matplotlib.ticker import NullFormatter

    rows = means(records)
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
            err = [r.get(f"{key}_std") or 0.0 for r in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"LoRA {preset}")
            for r, x, y in zip(pts, xs, ys):
                ax.annotate(f"r{r['rank']:.0f}", (x, y), textcoords="offset points", xytext=(4, 4))
            drawn = True
        for r in (r for r in rows if r["mode"] == "full" and r.get(key) is not None):
            ax.axhline(r[key], color="black", linestyle="--", linewidth=0.8)
            if r.get("trainable_params"):
                ax.plot([r["trainable_params"]], [r[key]], "k*", markersize=12, label="full")
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
        key = (str(c["variant"]), str(c.get("model") or ""), str(c.get("seed") or ""))
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
    ax.set_title("Training curves")
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
    for i, r in enumerate(means(records)):
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


PLOTS = ("quality_vs_params.png", "training_curves.png", "storage.png")


def write_plots(
    records: Sequence[Record], curves: Sequence[Record], out: str | os.PathLike[str]
) -> list[Path]:
    """The three PNGs of :data:`PLOTS` in ``out``."""
    out = Path(out)
    figs = (quality_figure(records), curves_figure(curves), storage_figure(records))
    return [save_png(fig, out / name) for fig, name in zip(figs, PLOTS)]
