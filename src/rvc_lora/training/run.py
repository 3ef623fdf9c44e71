"""``python train.py``: build everything from the composed config, fit, write the run's files.

A run directory holds ``.hydra/`` (resolved config), ``run_info.json`` (git commit, matched LoRA
targets, parameter counts; after fit also ``voice_f0_median_hz``, the voice's median F0 that
``pitch=auto`` transposes onto: a property of the voice, not a training metric, so it sits
with the run's description rather than in ``metrics.json``), ``checkpoints/`` (trainable tensors only), the adapter
(``adapter.safetensors``, or ``generator.pth`` for full fine-tuning; ``discriminator.pth`` when
D trained) and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rvc_lora.data.cache import write_json
from rvc_lora.features.hubert_tiny import ensure_tiny_encoder
from rvc_lora.lora import base_state_dict
from rvc_lora.training.callbacks import AdapterExport, StepTimer
from rvc_lora.training.console import LogIntervalWithinEpoch, log_once, quiet_warnings
from rvc_lora.utils.atomic import atomic_torch_save

log = logging.getLogger(__name__)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def git_commit(root: str | Path) -> str | None:
    """HEAD commit of the code that ran (``+dirty`` when it had uncommitted changes)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def reset_peak_memory() -> None:
    """Start a new peak-memory measurement for this run.

    The process may have run other jobs before (Hydra's joblib launcher reuses its workers), and
    the kernel's max RSS would report their peak: on Linux the peak RSS (VmHWM) is reset by
    writing 5 to /proc/self/clear_refs; CUDA has its own reset.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory since :func:`reset_peak_memory`: CUDA allocator peak on GPU, else the
    process's peak RSS (VmHWM on Linux; max RSS over the process's life elsewhere)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)
    }


def build_run_index(datamodule: Any, out: Path, name: str, version: str) -> Path | None:
    """RVC's retrieval index over the run's content features, saved next to the adapter."""
    import faiss

    from rvc_lora.data.cache import features_from_cache
    from rvc_lora.features.index import build_index, save_index

    report = getattr(datamodule, "report", None)
    if report is None or not report.items:
        return None
    feats = features_from_cache([item.feature_path for item in report.items])
    index = build_index(feats)
    n = faiss.extract_index_ivf(index).nlist
    return save_index(index, out / f"added_IVF{n}_Flat_nprobe_1_{name}_{version}.index")


def voice_f0_median(datamodule: Any) -> float | None:
    """Median F0 (Hz) over the voiced frames of the cached F0 of every prepared slice.

    None without prepared items, or for multi-speaker data (``speaker_id=folder``), where a
    single median describes no voice.
    """
    from rvc_lora.data.cache import read_entry
    from rvc_lora.features.pitch import voiced_median_hz

    report = getattr(datamodule, "report", None)
    if report is None or not report.items or getattr(datamodule, "speakers", None):
        return None
    entries = (read_entry(item.feature_path) for item in report.items)
    return voiced_median_hz([e["f0"] for e in entries if e is not None and "f0" in e])


def train(cfg: DictConfig) -> float | None:
    """Fit one run; returns ``cfg.optimized_metric`` for Hydra sweepers."""
    log_once()
    quiet_warnings()
    L.seed_everything(cfg.seed, workers=True)
    ensure_tiny_encoder(cfg.features)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module)
    timer = StepTimer()
    callbacks = [*instantiate_group(cfg.get("callbacks")), timer, LogIntervalWithinEpoch()]
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    counts = module.count_parameters()
    info = {
        "git_commit": git_commit(cfg.paths.root_dir),
        "mode": "full" if module.lora is None else "lora",
        "lora": OmegaConf.to_container(cfg.lora, resolve=True),
        "lora_targets": list(module.lora_targets),
        "parameters": counts,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "command": sys.argv,
    }
    write_json(out / "run_info.json", info)  # the module logs the counts at fit start
    for logger in loggers:
        logger.log_hyperparams(
            {
                **{f"params/{k}": v for k, v in counts.items()},
                "lora/n_targets": len(module.lora_targets),
            }
        )

    if module.lora is not None and cfg.model.get("pretrained_g") is None:
        # No base file exists to apply the adapter to later: keep this run's random-init base.
        atomic_torch_save({"model": base_state_dict(module.generator)}, out / "base.pth")

    reset_peak_memory()
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    wall = time.perf_counter() - start

    artifact = out / module.artifact_name
    exported = {c.final.resolve() for c in callbacks if isinstance(c, AdapterExport) and c.final}
    if artifact.resolve() not in exported:  # the export callback is off or writes elsewhere
        artifact = module.save_adapter(artifact)
    if module.d_policy == "trained":
        # A trained D is half of a new pretrained base (RVC ships f0D*.pth beside f0G*.pth).
        d_state = {
            k: v.detach().to("cpu").clone() for k, v in module.discriminator.state_dict().items()
        }
        atomic_torch_save({"model": d_state}, out / "discriminator.pth")
    index = build_run_index(datamodule, out, cfg.task_name, module.generator.config.version)
    median = voice_f0_median(datamodule)
    if median is not None:
        info["voice_f0_median_hz"] = median
        write_json(out / "run_info.json", info)  # atomic rewrite, one key more
        log.info("voice median F0: %.1f Hz (for pitch=auto)", median)
    checkpoint = next(
        (c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None
    )
    metrics = {
        **_scalars(trainer.callback_metrics),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": wall,
        "step_time_s": timer.median,
        "peak_memory_mb": peak_memory_mb(module.device),
        "artifact": str(artifact),
        "artifact_kb": Path(artifact).stat().st_size / 1024,
        "index": str(index) if index else None,
        "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        "best_monitor": checkpoint.monitor if checkpoint else None,  # what best_score measures
        "best_score": float(checkpoint.best_model_score)
        if checkpoint and checkpoint.best_model_score is not None
        else None,
        **{f"params_{k}": v for k, v in counts.items()},
    }
    write_json(out / "metrics.json", metrics)
    log.info("run finished: %s", out)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None
