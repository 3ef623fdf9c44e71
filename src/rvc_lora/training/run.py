"""``python train.py``: build everything from the composed config, fit, write the run's files.

A run directory holds ``.hydra/`` (resolved config), ``run_info.json`` (git commit, voice,
``f0_method`` (the method the F0 was computed with: ``features.f0_method: auto`` resolved, which
inference reads as the voice's own), D policy, matched LoRA targets, parameter counts; after fit also ``data``, what it trained on,
and ``voice_f0_median_hz``, the voice's median F0 that ``pitch=auto`` transposes onto: a
property of the voice, not a training metric, so it sits with the run's description rather than
in ``metrics.json``), ``checkpoints/`` (trainable tensors only), the adapter
(``adapter.safetensors``, or ``generator.pth`` for full fine-tuning; ``discriminator.pth`` when
D trained) and ``metrics.json``.

Times and memory in ``metrics.json`` count from the first training step (:class:`TrainMemory`,
:class:`~rvc_lora.training.callbacks.StepTimer`): data preparation and a warm or cold feature
cache do not change them. ``heldout`` scores the adapter the run keeps (after an early stop
restored the best weights) on the validation items that did not choose it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import resource
import subprocess
import sys
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
from rvc_lora.training.cluster import resume_path
from rvc_lora.training.console import LogIntervalWithinEpoch, log_once, quiet_warnings
from rvc_lora.training.quality import warm_up
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
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def malloc_trim() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim(0)``); False where there is
    no glibc. A reused joblib worker keeps the freed heap of its earlier jobs resident: the next
    job would reuse it without raising the RSS, and measure nothing."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False


def current_memory_mb(device: torch.device | None = None) -> float | None:
    """Memory in use now: CUDA allocated on GPU, else the RSS (VmRSS; None where unknown)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS")


def _proc_status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**10  # kB
    return None


def start_memory_measurement(device: torch.device | None = None) -> float | None:
    """Free what can be freed, reset the peak and return the baseline (MB) that
    ``peak_memory_mb(device) - baseline`` measures training's own memory against."""
    gc.collect()
    malloc_trim()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory()
    return current_memory_mb(device)


class TrainMemory(L.Callback):
    """Starts the memory measurement when the first training batch starts (after data
    preparation and set-up), and remembers the device the run trained on."""

    def __init__(self) -> None:
        self.baseline_mb: float | None = None
        self.device: torch.device | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.device is None:
            self.device = pl_module.device
            self.baseline_mb = start_memory_measurement(self.device)

    def summary(self) -> dict[str, float | None]:
        """``{"peak_memory_mb", "train_memory_mb"}``: the peak since the first step (since
        :func:`reset_peak_memory` when no step ran) and what training added to the baseline."""
        peak = peak_memory_mb(self.device)
        train = peak - self.baseline_mb if self.baseline_mb is not None else None
        return {"peak_memory_mb": peak, "train_memory_mb": train}


def early_stop_summary(callbacks: list[Any]) -> dict[str, Any] | None:
    """``EarlyStop.summary()`` of the run's early-stopping callback, if it has one (found by
    class name, so this file does not import it)."""
    for c in callbacks:
        if type(c).__name__ == "EarlyStop" and callable(getattr(c, "summary", None)):
            return c.summary()
    return None


def score_heldout(module: Any, datamodule: Any, device: torch.device | None) -> dict | None:
    """Final scores of the module's current weights on the validation items that validation
    did not monitor (``module.score_items``), on the device the run trained on; None when the
    datamodule has no validation items."""
    try:
        loader = datamodule.val_dataloader()
    except (AttributeError, NotImplementedError):  # a datamodule without validation
        return None
    home = module.device
    if device is not None:
        module.to(device)  # Lightning's teardown moved it to the CPU
    try:
        scores = module.score_items(loader, skip=module.val_quality.limit)
    finally:
        module.to(home)
    return scores if scores["n_items"] else None


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


def resolve_run_f0_method(cfg: DictConfig) -> str:
    """Resolve ``features.f0_method: auto`` once, in ``cfg`` itself, before any work.

    ``data.f0_method`` interpolates ``features.f0_method``, so the data module, the cache key and
    ``run_info.json`` all see the resolved name (``.hydra/config.yaml``, written before the run
    starts, keeps ``auto``; inference reads ``run_info.json``'s ``f0_method`` over it).

    Returns:
        The method the run's F0 is computed with.
    """
    from rvc_lora.features.f0 import resolve_f0_method

    features = cfg.features
    method = resolve_f0_method(
        str(features.f0_method),
        features.get("rmvpe_path", "models/rmvpe.pt"),
        features.get("fcpe_path", "models/fcpe_c_v001.pt"),
    )
    features.f0_method = method
    return method


def train(cfg: DictConfig) -> float | None:
    """Fit one run; returns ``cfg.optimized_metric`` for Hydra sweepers."""
    log_once()
    quiet_warnings()
    L.seed_everything(cfg.seed, workers=True)
    f0_method = resolve_run_f0_method(cfg)
    ensure_tiny_encoder(cfg.features)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    # The data module's own method, should data.f0_method not follow features.f0_method.
    f0_method = getattr(getattr(datamodule, "features", None), "f0_method", f0_method)
    module = instantiate(cfg.module)
    timer, memory = StepTimer(), TrainMemory()
    callbacks = [
        *instantiate_group(cfg.get("callbacks")),
        memory,  # before the timer: its gc and trim are not on the clock
        timer,
        LogIntervalWithinEpoch(),
    ]
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    counts = module.count_parameters()
    info = {
        "git_commit": git_commit(cfg.paths.root_dir),
        "voice": cfg.get("voice"),
        "f0_method": f0_method,
        "mode": "full" if module.lora is None else "lora",
        "d_policy": module.d_policy,
        "lora": OmegaConf.to_container(cfg.lora, resolve=True),
        "lora_targets": list(module.lora_targets),
        "parameters": counts,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "command": sys.argv,
    }
    rank_zero = trainer.is_global_zero  # under DDP only rank 0 writes the run's files
    if rank_zero:
        write_json(out / "run_info.json", info)  # the module logs the counts at fit start
    for logger in loggers:
        logger.log_hyperparams(
            {
                **{f"params/{k}": v for k, v in counts.items()},
                "lora/n_targets": len(module.lora_targets),
            }
        )

    if rank_zero and module.lora is not None and cfg.model.get("pretrained_g") is None:
        # No base file exists to apply the adapter to later: keep this run's random-init base.
        atomic_torch_save({"model": base_state_dict(module.generator)}, out / "base.pth")

    if module.val_quality.limit:
        warm_up(module.generator.config.sr)  # loaded before the memory baseline, in any worker
    reset_peak_memory()  # the measurement a run without a training step reports
    timer.fit_called()  # data preparation runs inside fit, before any callback hook
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg.get("ckpt_path"), trainer))
    # Read before anything else runs: the scoring and the index below are not training.
    wall = timer.elapsed()  # from the first training step (0.0 when none ran)
    memory_mb = memory.summary()
    if not rank_zero:
        return None  # rank 0 holds the same weights (DDP) and writes everything below

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
        log.info("voice median F0: %.1f Hz (for pitch=auto)", median)
    if callable(getattr(datamodule, "data_summary", None)):
        info["data"] = datamodule.data_summary()
    write_json(out / "run_info.json", info)  # atomic rewrite with what fit found out
    heldout = score_heldout(module, datamodule, memory.device)
    if heldout is not None:
        log.info(
            "held-out scores (%d %s items): MCD %.2f dB, F0 RMSE %.1f cents, SECS %.3f, "
            "mel L1 %.3f",
            heldout["n_items"],
            heldout["items"],
            heldout["mcd_db"],
            heldout["f0_rmse_cents"],
            heldout["secs"],
            heldout["mel_l1"],
        )
    checkpoint = next(
        (c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None
    )
    metrics = {
        **_scalars(trainer.callback_metrics),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": wall,
        "prepare_time_s": timer.prepare_s,
        "step_time_s": timer.median,
        **memory_mb,
        "early_stop": early_stop_summary(callbacks),
        "heldout": heldout,
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
