"""Find training job directories and read each into one :class:`Row`.

A job directory is any folder holding both ``run_info.json`` and ``metrics.json`` (what
``rvc_lora.training.run.train`` writes), found recursively under the given roots, so a single run,
a Hydra multirun folder or a whole ``outputs/`` tree all work. Optional files read too:
``.hydra/config.yaml`` (the seed), ``eval.json`` (flat float quality metrics), the CSV logger's
``metrics.csv`` (validation curves), ``base.pth`` (the run's own random-init base).

Runs of issue 18 onwards also carry the axes of the table in ``run_info.json`` (``voice``,
``d_policy``, ``data``) and, in ``metrics.json``, the final held-out scores (``heldout``), the
early-stop summary (``early_stop``) and the memory training itself added (``train_memory_mb``).
Older job dirs still read: voice ``""``, data size ``"all"``, quality from ``eval.json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rvc_lora.utils.errors import RvcLoraError

EVAL_KEYS = (
    "mcd_db",
    "f0_rmse_cents",
    "f0_corr",
    "vuv_error",
    "pesq",
    "secs_target",
    "secs_source",
    "log_mel_l1",
)
VAL_KEY = "val/loss_mel"
MCD_KEY = "val/mcd"
# Final held-out scores (metrics.json ``heldout``) -> record keys, and the eval.json key each
# falls back to for runs made before the held-out set existed.
HELDOUT_KEYS = {
    "mcd_db": "mcd_db",
    "f0_rmse_cents": "f0_rmse_cents",
    "secs": "secs",
    "mel_l1": "mel_l1",
}
EVAL_FALLBACK = {
    "mcd_db": "mcd_db",
    "f0_rmse_cents": "f0_rmse_cents",
    "secs": "secs_target",
    "mel_l1": "log_mel_l1",
}
ALL_DATA = "all"
# Columns a CSV log may carry with the seconds since training started; training logs
# time/wall_s (StepTimer) at every validation.
WALL_COLUMNS = ("wall_time_s", "time/wall_s", "train/wall_time_s")
WALL_SOURCE = "the run's clock at that validation"
EARLY_STOP_SOURCE = "the early-stop callback's clock at its best validation"
FP16_BYTES = 2


class ReportError(RvcLoraError, ValueError):
    """No job directories, or a job file that cannot be read."""


@dataclass
class Row:
    """One training job, with the numbers the paper table shows.

    Sizes are KB (1024 bytes), times seconds, memory MB. ``None`` is "not measured".
    ``curve`` holds ``(steps done, val/loss_mel)`` pairs of each validation, in order, and
    ``mcd_curve`` ``(steps done, val/mcd)`` pairs. ``heldout`` holds the final held-out scores
    (keys of :data:`HELDOUT_KEYS`) of the adapter the run kept, or eval.json's for older runs.
    """

    run_dir: Path
    mode: str  # "lora" | "full"
    model: str
    preset: str | None = None
    rank: int | None = None
    alpha: float | None = None
    flags: tuple[str, ...] = ()  # "dora", "rslora": part of the variant name
    seed: int | None = None
    trainable_g: int | None = None
    total_g: int | None = None
    generator_params: int | None = None  # bare generator (denominator of "% of G")
    generator_params_source: str = ""
    adapter_kb: float | None = None
    base_kb: float | None = None  # LoRA: the base every adapter needs; full: None
    base_source: str = ""
    step_time_s: float | None = None
    peak_memory_mb: float | None = None
    wall_time_s: float | None = None
    global_step: int | None = None
    best_step: int | None = None
    wall_to_best_s: float | None = None
    wall_to_best_source: str = ""
    val_mel: float | None = None
    val_mel_first: float | None = None
    eval: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)  # the job's Hydra config, flattened
    voice: str = ""  # the target voice (cfg.voice); "" for runs without one
    d_policy: str = ""  # "trained" | "frozen"
    max_seconds: float | None = None  # data.max_seconds; None = all the training audio
    data_s: float | None = None  # seconds of training audio used
    train_memory_mb: float | None = None
    stopped_step: int | None = None  # the early stop's step; None = ran to max_steps
    early_stop: bool = False  # the run has an early-stop summary (stopped_step means something)
    heldout: dict[str, float] = field(default_factory=dict)
    heldout_items: str = ""  # "test" (items not used for monitoring) | "all" | "" (eval.json)
    mcd_curve: list[tuple[int, float]] = field(default_factory=list)
    settings: tuple[str, ...] = ()  # "lr=0.001": what sets it apart from its variant's others

    @property
    def variant(self) -> str:
        """``"full"``, ``"full (D frozen)"`` or ``"lora r8 decoder"`` (plus ``dora``/``rslora``
        when used, and the settings that set the job apart from others of that name, like
        ``lr=0.001``)."""
        if self.mode == "full":
            name = "full (D frozen)" if self.d_policy == "frozen" else "full"
            return " ".join([name, *self.settings])
        return " ".join(["lora", f"r{self.rank}", str(self.preset), *self.flags, *self.settings])

    @property
    def data_size(self) -> str:
        """The data-size axis label: ``"15 s"`` for ``data.max_seconds=15``, else ``"all"``."""
        return ALL_DATA if self.max_seconds is None else f"{self.max_seconds:g} s"

    @property
    def lr(self) -> float | None:
        """``train.lr`` of the job's config."""
        value = self.config.get("train.lr")
        return None if value is None else _number(yaml.safe_load(value))

    @property
    def pct_g(self) -> float | None:
        """Trainable generator elements as a percentage of the bare generator's."""
        if self.trainable_g is None or not self.generator_params:
            return None
        return 100.0 * self.trainable_g / self.generator_params

    def storage_kb(self, n_voices: int) -> float | None:
        """KB to keep ``n_voices`` voices: one base plus N adapters, or N full generators."""
        if self.adapter_kb is None:
            return None
        if self.mode == "full":
            return n_voices * self.adapter_kb
        if self.base_kb is None:
            return None
        return self.base_kb + n_voices * self.adapter_kb


def find_job_dirs(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every folder under ``roots`` (themselves included) with run_info.json and metrics.json."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            raise ReportError(f"{root}: not a folder; pass a run dir or a folder of runs")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in {".hydra", "checkpoints"})
            if "run_info.json" in filenames and "metrics.json" in filenames:
                found.add(Path(dirpath))
    return sorted(found)


def collect(roots: Sequence[str | os.PathLike[str]]) -> list[Row]:
    """Read every job dir under ``roots`` into a :class:`Row`.

    Raises:
        ReportError: no job dir was found, or one of its JSON files is unreadable.
    """
    dirs = find_job_dirs(roots)
    if not dirs:
        names = ", ".join(str(r) for r in roots)
        raise ReportError(
            f"no job dirs (a folder with run_info.json and metrics.json) under {names}; "
            "pass the output folder of train.py runs"
        )
    rows = [read_job(d) for d in dirs]
    _fill_from_full_runs(rows)
    _label_settings(rows)
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: unreadable JSON ({err}); rerun or remove that job") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object; rerun or remove that job")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def read_job(run_dir: str | os.PathLike[str]) -> Row:
    """One job dir as a :class:`Row` (base size and "% of G" denominator from this job only)."""
    run_dir = Path(run_dir)
    info = _read_json(run_dir / "run_info.json")
    metrics = _read_json(run_dir / "metrics.json")
    lora = info.get("lora") or {}
    counts = info.get("parameters") or {}
    mode = info.get("mode") or lora.get("mode") or "lora"
    model = info.get("model") or {}
    config = _hydra_config(run_dir)
    row = Row(
        run_dir=run_dir,
        mode=mode,
        model=str(model.get("preset", "?")),
        seed=_int(config.get("seed")),
        config=_flatten(config),
        trainable_g=_int(metrics.get("params_trainable_g", counts.get("trainable_g"))),
        total_g=_int(metrics.get("params_total_g", counts.get("total_g"))),
        step_time_s=_number(metrics.get("step_time_s")),
        peak_memory_mb=_number(metrics.get("peak_memory_mb")),
        wall_time_s=_number(metrics.get("wall_time_s")),
        global_step=_int(metrics.get("global_step")),
    )
    if mode != "full":
        row.preset, row.rank = lora.get("preset"), _int(lora.get("rank"))
        row.alpha = _number(lora.get("alpha"))
        row.flags = tuple(f for f in ("dora", "rslora") if lora.get(f"use_{f}"))
    row.generator_params = row.total_g
    row.generator_params_source = (
        "the full run's generator" if mode == "full" else "this run's generator (adapters included)"
    )
    row.adapter_kb = _number(metrics.get("artifact_kb"))
    if row.adapter_kb is None:
        artifact = run_dir / ("generator.pth" if mode == "full" else "adapter.safetensors")
        row.adapter_kb = artifact.stat().st_size / 1024 if artifact.is_file() else None
    if mode != "full":
        _own_base(row, model)
    row.eval = _read_eval(run_dir / "eval.json")
    row.curve, row.mcd_curve, wall_at = _read_curve(run_dir)
    _axes(row, info, config)
    _heldout(row, metrics)
    row.train_memory_mb = _number(metrics.get("train_memory_mb"))
    _best(row, metrics, wall_at)
    return row


def _axes(row: Row, info: dict[str, Any], config: dict[str, Any]) -> None:
    """Voice, discriminator policy and training audio: run_info.json, else the config."""
    voice = info.get("voice", config.get("voice"))
    row.voice = voice if isinstance(voice, str) else ""
    policy = info.get("d_policy") or (config.get("discriminator") or {}).get("policy")
    # Without a record, the defaults of train.yaml: lora=full trains D, LoRA keeps it frozen.
    row.d_policy = str(policy or ("trained" if row.mode == "full" else "frozen"))
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    seconds = data.get("max_seconds", (config.get("data") or {}).get("max_seconds"))
    row.max_seconds = _number(seconds)
    row.data_s = _number(data.get("seconds"))


def _heldout(row: Row, metrics: dict[str, Any]) -> None:
    """Final held-out scores from metrics.json, else eval.json's (runs before the held-out set)."""
    heldout = metrics.get("heldout")
    if isinstance(heldout, dict):
        values = {k: _number(heldout.get(src)) for k, src in HELDOUT_KEYS.items()}
        row.heldout_items = str(heldout.get("items") or "")
    else:
        values = {k: row.eval.get(src) for k, src in EVAL_FALLBACK.items()}
    row.heldout = {k: v for k, v in values.items() if v is not None}


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / ".hydra" / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


# Config entries that differ between jobs without changing what they measure (the seed is what
# a variant's jobs are averaged over; the rest name the job, or say how it logs and loads data).
_NOT_SETTINGS = (
    "seed", "task_name", "ckpt_path", "paths.", "hydra.", "logger.", "callbacks.",
    "data.progress", "data.num_workers", "data.prepare_workers", "data.cache_dir",
    "trainer.log_every_n_steps",
    # Axes of the table, not settings of a variant: cells are (voice, data size, variant).
    "voice", "data.input_dir", "data.heldout_dir", "data.max_seconds", "data.subset_seed",
)  # fmt: skip


def _label_settings(rows: Sequence[Row]) -> None:
    """Tell apart jobs of one variant that differ in more than the seed (a ``train.lr`` sweep,
    say): each gets the differing settings in its name, so the table never averages them."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.variant), []).append(row)
    for members in groups.values():
        keys = sorted(
            k
            for k in set().union(*(r.config for r in members))
            if not k.startswith(_NOT_SETTINGS) and len({r.config.get(k) for r in members}) > 1
        )
        leaves = [k.rsplit(".", 1)[-1] for k in keys]
        names = [leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)]
        for row in members:
            row.settings = tuple(
                f"{name}={_setting(row.config.get(k))}" for name, k in zip(names, keys)
            )


def _setting(value: str | None) -> str:
    if value is None:
        return "unset"
    return value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value


def _own_base(row: Row, model: dict[str, Any]) -> None:
    # The base this adapter was trained on, as a file on disk: the run's random-init base.pth,
    # or the pretrained generator it loaded.
    candidates = [(row.run_dir / "base.pth", "base.pth of the run")]
    if model.get("pretrained_g"):
        candidates.append((Path(model["pretrained_g"]), "the pretrained generator file"))
    for path, source in candidates:
        if path.is_file():
            row.base_kb, row.base_source = path.stat().st_size / 1024, source
            return


def _read_eval(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    data = _read_json(path)
    values = {k: _number(data.get(k)) for k in EVAL_KEYS}
    return {k: v for k, v in values.items() if v is not None}


def csv_log(run_dir: Path) -> Path | None:
    """The CSV logger's ``metrics.csv`` under ``run_dir`` (the last one by path if several)."""
    logs = sorted(p for p in run_dir.rglob("metrics.csv") if "checkpoints" not in p.parts)
    return logs[-1] if logs else None


def _read_curve(
    run_dir: Path,
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], dict[int, float]]:
    """Validation curves (val mel, val MCD) and, where the log has a wall-time column, seconds
    at each step.

    Lightning's CSV ``step`` is 0-based: a validation after 10 optimisation steps is logged at
    step 9, so steps done = step + 1.
    """
    path = csv_log(run_dir)
    if path is None:
        return [], [], {}
    curve: list[tuple[int, float]] = []
    mcd: list[tuple[int, float]] = []
    wall_at: dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            step = _parse(rec.get("step"))
            if step is None:
                continue
            done = int(step) + 1
            for col in WALL_COLUMNS:
                wall = _parse(rec.get(col))
                if wall is not None:
                    wall_at[done] = wall
            val = _parse(rec.get(VAL_KEY))
            if val is not None:
                curve.append((done, val))
            val = _parse(rec.get(MCD_KEY))
            if val is not None:
                mcd.append((done, val))
    return curve, mcd, wall_at


def _parse(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _best(row: Row, metrics: dict[str, Any], wall_at: dict[int, float]) -> None:
    """Best val mel, the best step and the wall time until then: the early-stop summary's where
    the run has one (its monitor decides which adapter is kept), else the val mel curve's."""
    stop = metrics.get("early_stop")
    if isinstance(stop, dict):
        row.early_stop, row.stopped_step = True, _int(stop.get("stopped_step"))
    if row.curve:
        row.val_mel_first = row.curve[0][1]
        row.best_step, best = min(row.curve, key=lambda sv: sv[1])  # earliest among ties
        row.val_mel = best
    # When the checkpoint callback monitors val mel (runs before val/mcd became the monitor
    # record no best_monitor), its best score is the same quantity, unrounded by the CSV writer.
    if metrics.get("best_monitor", VAL_KEY) == VAL_KEY:
        score = _number(metrics.get("best_score"))
        row.val_mel = score if score is not None else row.val_mel
    if row.val_mel is None:
        row.val_mel = _number(metrics.get(VAL_KEY))
    # A checkpoint monitor on held-out MCD (no early-stop summary) keeps the MCD-best step.
    if metrics.get("best_monitor") == MCD_KEY and row.mcd_curve:
        row.best_step = min(row.mcd_curve, key=lambda sv: sv[1])[0]
    if row.best_step is None and metrics.get("best_checkpoint"):
        found = re.search(r"step(\d+)", Path(str(metrics["best_checkpoint"])).name)
        row.best_step = int(found.group(1)) if found else None
    if isinstance(stop, dict) and _int(stop.get("best_step")) is not None:
        row.best_step = _int(stop.get("best_step"))
        wall = _number(stop.get("best_wall_s"))
        if wall is not None:
            row.wall_to_best_s, row.wall_to_best_source = wall, EARLY_STOP_SOURCE
            return
    if row.best_step is None:
        return
    # Only the run's own clock: steps x median step time leaves out validation, data loading
    # and set-up, so a run without it shows the time as not measured.
    if row.best_step in wall_at:
        row.wall_to_best_s, row.wall_to_best_source = wall_at[row.best_step], WALL_SOURCE


def _fill_from_full_runs(rows: Iterable[Row]) -> None:
    """Where a job has no base file, take the base size and bare generator size from a full run
    of the same model (its ``generator.pth`` is the same generator), else estimate fp16 bytes."""
    rows = list(rows)
    full = {r.model: r for r in rows if r.mode == "full" and r.adapter_kb is not None}
    for row in rows:
        if row.mode == "full":
            continue
        ref = full.get(row.model)
        if ref is not None and ref.total_g:
            row.generator_params = ref.total_g
            row.generator_params_source = "the full run's generator"
        if row.base_kb is not None:
            continue
        if ref is not None:
            row.base_kb, row.base_source = ref.adapter_kb, "the full run's generator.pth"
        elif row.generator_params:
            row.base_kb = row.generator_params * FP16_BYTES / 1024
            row.base_source = "parameter count x 2 bytes (fp16)"
