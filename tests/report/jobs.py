"""Fake training job dirs in the real layout (what rvc_lora.training.run writes), from dicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

GENERATOR = 710_114  # elements of the bare tiny generator
EVAL = {
    "mcd_db": 6.10,
    "f0_rmse_cents": 40.0,
    "f0_corr": 0.90,
    "vuv_error": 0.10,
    "pesq": 1.80,
    "secs_target": 0.800,
    "secs_source": 0.300,
    "log_mel_l1": 0.70,
}


def write_job(
    root: Path,
    name: str,
    *,
    mode: str = "lora",
    preset: str = "decoder",
    rank: int = 8,
    seed: int = 0,
    trainable_g: int = 72_192,
    artifact_kb: float = 153.7,
    step_time_s: float = 0.17,
    peak_memory_mb: float = 820.0,
    curve: tuple[float, ...] = (3.11, 2.90, 2.75, 2.60, 2.50, 2.45),
    eval_metrics: dict[str, float] | None = None,
    val_every: int = 50,
    config: dict[str, Any] | None = None,
    voice: str | None = None,
    d_policy: str | None = None,
    max_seconds: float | None = None,
    data_s: float | None = None,
    heldout: dict[str, Any] | None = None,
    early_stop: dict[str, Any] | None = None,
    train_memory_mb: float | None = None,
    mcd_curve: tuple[float, ...] | None = None,
    wall_every_s: float | None = None,
) -> Path:
    """One job dir: run_info.json, metrics.json, .hydra/*.yaml, csv/metrics.csv, eval.json.

    ``curve`` is val/loss_mel after every ``val_every`` steps; ``eval_metrics=None`` writes no
    eval.json; ``config`` adds entries to the job's ``.hydra/config.yaml`` (``{"train": {"lr": 1e-3}}``).

    The issue-18 fields are written only when given (so the defaults make an older job dir):
    ``voice``, ``d_policy`` and ``data`` (``max_seconds``, ``data_s`` seconds used) in
    run_info.json; ``heldout``, ``early_stop`` and ``train_memory_mb`` in metrics.json;
    ``mcd_curve`` as val/mcd beside each val/loss_mel and ``wall_every_s`` as time/wall_s
    (``wall_every_s`` x the validation's number) in the CSV log.
    """
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    full = mode == "full"
    lora: dict[str, Any] = {"_target_": "rvc_lora.training.build.make_lora_config", "mode": mode}
    if not full:
        lora.update(preset=preset, rank=rank, alpha=16, use_dora=False, use_rslora=False)
    total_g = GENERATOR if full else GENERATOR + trainable_g - 512  # adapters, emb_g row shared
    counts = {
        "total_g": total_g,
        "trainable_g": trainable_g,
        "total_d": 231_906,
        "trainable_d": 231_906 if full else 0,
    }
    counts["trainable"] = counts["trainable_g"] + counts["trainable_d"]
    info = {"mode": mode, "lora": lora, "lora_targets": [], "parameters": counts}
    info["model"] = {"preset": "tiny", "f0": True, "pretrained_g": None}
    if voice is not None:
        info["voice"] = voice
    if d_policy is not None:
        info["d_policy"] = d_policy
    if max_seconds is not None or data_s is not None:
        info["data"] = {
            "input_dir": f"data/{voice}/train",
            "heldout_dir": f"data/{voice}/eval",
            "max_seconds": max_seconds,
            "subset_seed": seed,
            "seconds": data_s,
            "available_seconds": 200.0,
            "n_slices": 10,
            "n_sources": 5,
        }
    steps = val_every * len(curve)
    best = min(range(len(curve)), key=lambda i: curve[i])
    artifact = "generator.pth" if full else "adapter.safetensors"
    metrics = {
        "val/loss_mel": curve[-1],
        "global_step": steps,
        "epochs": 10,
        "wall_time_s": steps * step_time_s * 1.3,
        "step_time_s": step_time_s,
        "peak_memory_mb": peak_memory_mb,
        "artifact": str(run / artifact),
        "artifact_kb": artifact_kb,
        "best_checkpoint": str(
            run / f"checkpoints/best-epoch003-step{(best + 1) * val_every}.ckpt"
        ),
        "best_score": curve[best],
        **{f"params_{k}": v for k, v in counts.items()},
    }
    for key, value in (
        ("heldout", heldout),
        ("early_stop", early_stop),
        ("train_memory_mb", train_memory_mb),
    ):
        if value is not None:
            metrics[key] = value
    (run / "run_info.json").write_text(json.dumps(info, indent=1))
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    hydra_config: dict[str, Any] = {"seed": seed, "lora": lora}
    if voice is not None:  # as configs/voice/<name>.yaml sets them: axes, not settings
        hydra_config["voice"] = voice
        hydra_config["data"] = {
            "input_dir": f"/data/{voice}/train",
            "heldout_dir": f"/data/{voice}/eval",
            "max_seconds": max_seconds,
            "subset_seed": seed,
        }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**hydra_config, **(config or {})}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    (run / artifact).write_bytes(b"\0" * 16)
    if eval_metrics is not None:
        (run / "eval.json").write_text(json.dumps(eval_metrics))
    (run / "csv").mkdir()
    with open(run / "csv" / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        extra = ["val/mcd"] * (mcd_curve is not None) + ["time/wall_s"] * (wall_every_s is not None)
        w.writerow(["epoch", "step", "train/loss_mel", "val/loss_mel", *extra])
        for i, val in enumerate(curve):
            step = (i + 1) * val_every - 1  # Lightning's 0-based step
            w.writerow([i, step, 3.0, "", *[""] * len(extra)])
            more = [] if mcd_curve is None else [mcd_curve[i]]
            more += [] if wall_every_s is None else [(i + 1) * wall_every_s]
            w.writerow([i, step, "", val, *more])
    return run


def paper_jobs(root: Path) -> list[Path]:
    """The golden fixture: full, lora r8 decoder, lora r16 all (one seed each)."""
    return [
        write_job(
            root,
            "full",
            mode="full",
            trainable_g=GENERATOR,
            artifact_kb=2902.7,
            step_time_s=0.30,
            peak_memory_mb=1210.0,
            curve=(3.10, 2.70, 2.40, 2.30, 2.32, 2.35),
            eval_metrics=EVAL,
            config={"train": {"lr": 2e-3}},
        ),
        write_job(
            root,
            "lora_r8_decoder",
            eval_metrics={**EVAL, "mcd_db": 6.30, "secs_target": 0.780, "pesq": 1.70},
            config={"train": {"lr": 4e-3}},
        ),
        write_job(
            root,
            "lora_r16_all",
            preset="all",
            rank=16,
            trainable_g=201_216,
            artifact_kb=410.2,
            step_time_s=0.21,
            peak_memory_mb=905.0,
            curve=(3.05, 2.80, 2.60, 2.48, 2.40, 2.41),
            eval_metrics={**EVAL, "mcd_db": 6.20, "secs_target": 0.790, "pesq": float("nan")},
        ),
    ]


AXES_VOICES = ("bdl", "slt")
AXES_SIZES = (15.0, None)  # data.max_seconds: "15 s", "all"
AXES_SEEDS = (0, 1)
# Held-out MCD = variant base + size offset + voice offset + 0.2 x seed (known pooled means).
AXES_MCD = {"full": 6.0, "full (D frozen)": 6.2, "lora r8 decoder": 6.3}
AXES_SIZE_MCD = {15.0: 0.5, None: 0.0}
AXES_VOICE_MCD = {"bdl": 0.0, "slt": 0.4}
AXES_MEMORY = {"full": 300.0, "full (D frozen)": 200.0, "lora r8 decoder": 100.0}


def axes_jobs(root: Path) -> list[Path]:
    """Issue-18 job dirs: 2 voices x 2 data sizes x 2 seeds x (full, full with D frozen,
    lora r8 decoder), with held-out scores, early-stop summaries and val/mcd curves.

    Seed 1 stops early at step 200; seed 0 runs to the end. Wall to best = 20 s + 2 s x seed.
    """
    jobs = []
    for voice in AXES_VOICES:
        for size in AXES_SIZES:
            for seed in AXES_SEEDS:
                for variant, base in AXES_MCD.items():
                    mcd = base + AXES_SIZE_MCD[size] + AXES_VOICE_MCD[voice] + 0.2 * seed
                    full = variant.startswith("full")
                    kind = {
                        "mode": "full" if full else "lora",
                        "trainable_g": GENERATOR if full else 72_192,
                        "artifact_kb": 2902.7 if full else 153.7,
                        "d_policy": "frozen" if variant != "full" else "trained",
                        "config": {"train": {"lr": 2e-3 if full else 4e-3}},
                    }
                    name = f"{voice}_{size}_{seed}_{variant.replace(' ', '_')}"
                    heldout = {"mcd_db": mcd, "f0_rmse_cents": 40.0 + seed, "secs": 0.80,
                               "mel_l1": 0.70, "n_items": 4, "items": "test"}  # fmt: skip
                    stop = {
                        "monitor": "val/mcd", "mode": "min", "patience": 3, "min_delta": 0.05,
                        "best": 6.5, "best_step": 150 + 50 * seed, "best_wall_s": 20.0 + 2 * seed,
                        "stopped_step": 200 if seed else None, "reason": "test",
                    }  # fmt: skip
                    jobs.append(
                        write_job(
                            root,
                            name,
                            seed=seed,
                            voice=voice,
                            max_seconds=size,
                            data_s=(14.5 if voice == "bdl" else 14.8) if size else 180.0,
                            heldout=heldout,
                            early_stop=stop,
                            train_memory_mb=AXES_MEMORY[variant] + seed,
                            mcd_curve=(9.0, 8.0, 7.0, 6.5, 6.6, 6.7),
                            wall_every_s=10.0,
                            **kind,
                        )
                    )
    return jobs
