"""What conversion reads from a voice's training run (its config, F0 method, encoder, index), the
conversion options and pipeline made from it, and atomic audio output: shared by ``infer.py``'s
modes, manifests of jobs and evaluation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf

from rvc_lora.inference.pitch import RUN_INFO
from rvc_lora.utils.atomic import atomic_path
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)


class InferenceError(RvcLoraError, ValueError):
    """Bad inference input: the message names the file and the fix."""


def run_config(ckpt: Path) -> DictConfig | None:
    """The training config of the run a checkpoint or adapter came from, if it is in a run dir.

    ``features.f0_method`` is the method the voice's F0 was computed with: the run's
    ``run_info.json`` records it (``auto`` resolved) and wins over ``.hydra/config.yaml``,
    which Hydra writes before the run resolves ``auto``.
    """
    for folder in (ckpt.parent, ckpt.parent.parent):
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            trained = OmegaConf.load(path)
            method = _recorded_f0_method(folder / RUN_INFO)
            if method is not None:
                OmegaConf.update(trained, "features.f0_method", method, force_add=True)
            return trained
    return None


def _recorded_f0_method(path: Path) -> str | None:
    """``f0_method`` of a run's ``run_info.json``; None when absent (older runs) or unreadable."""
    try:
        method = json.loads(path.read_text(encoding="utf-8")).get("f0_method")
    except (OSError, ValueError, AttributeError):
        return None
    return method if isinstance(method, str) and method else None


def trained_setting(cfg: DictConfig, trained: DictConfig | None, key: str) -> Any:
    """An explicit option wins, then the voice's training setting (``features.<key>``), then the
    ``features`` default."""
    value = cfg.get(key)
    if value is None and trained is not None:
        value = OmegaConf.select(trained, f"features.{key}")
    return value if value is not None else cfg.features.get(key)


def conversion_setup(
    cfg: DictConfig,
    model: Any,
    trained: DictConfig | None,
    index_path: Path | None,
    *,
    pitch: float = 0.0,
    auto_pitch_hz: float | None = None,
) -> tuple[Any, Any, Any]:
    """``(ConvertOptions, ConversionPipeline, FeatureIndex | None)`` from infer-style options
    (``infer.yaml``, ``eval.yaml``): the encoder and F0 method default to the voice's own.

    ``f0_method: auto`` resolves here (:func:`~rvc_lora.features.f0.resolve_f0_method`); the
    RMVPE or FCPE model a method needs is loaded once, from ``rmvpe_path`` / ``fcpe_path``
    (an explicit option, else the voice's training setting, else ``features``').
    """
    from rvc_lora.features.f0 import network_f0_models, resolve_f0_method
    from rvc_lora.features.hubert import load_content_encoder
    from rvc_lora.features.index import FeatureIndex
    from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions

    rmvpe_path = trained_setting(cfg, trained, "rmvpe_path") or "models/rmvpe.pt"
    fcpe_path = trained_setting(cfg, trained, "fcpe_path") or "models/fcpe_c_v001.pt"
    f0_method = str(trained_setting(cfg, trained, "f0_method"))
    if model.f0:
        f0_method = resolve_f0_method(f0_method, rmvpe_path, fcpe_path)
    elif f0_method == "auto":  # a voice without pitch never tracks F0: no weights to look for
        f0_method = "pm"
    options = ConvertOptions(
        pitch=pitch,
        auto_pitch_hz=auto_pitch_hz,
        f0_method=f0_method,
        index_rate=float(cfg.index_rate),
        protect=float(cfg.protect),
        rms_mix_rate=float(cfg.rms_mix_rate),
        filter_radius=int(cfg.filter_radius),
        resample_sr=int(cfg.get("resample_sr", 0)),
        speaker_id=int(cfg.speaker_id),
        seed=cfg.get("seed"),
    )
    encoder = load_content_encoder(
        trained_setting(cfg, trained, "encoder_path"),
        backend=cfg.features.get("backend", "native"),
    )
    networks = {}
    if model.f0:
        networks = network_f0_models(f0_method, rmvpe_path=rmvpe_path, fcpe_path=fcpe_path)
    index = None
    if index_path is not None and options.index_rate > 0:
        index = FeatureIndex.load(index_path, expected_dim=model.config.feature_dim)
        log.info("retrieval index %s (index_rate %.2f)", index_path.name, options.index_rate)
    return options, ConversionPipeline(encoder, **networks), index


def find_index(ckpt: Path) -> Path | None:
    """RVC's ``added_*.index`` next to the checkpoint (or in its run dir)."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        found = sorted(folder.glob("added_*.index"))
        if found:
            return found[-1]
    return None


def finish_export(path: Path, index_path: Path | None) -> Path:
    """Copy the voice's index beside an exported file ``path`` (atomically) and say so."""
    if index_path is not None:
        with atomic_path(path.with_name(index_path.name)) as tmp:
            shutil.copyfile(index_path, tmp)
    print(f"exported {path}" + (f" and {index_path.name}" if index_path else ""))
    return path


def write_audio(path: Path, audio: np.ndarray, sr: int, subtype: str) -> None:
    """Write atomically, so an interrupted run never leaves half a file."""
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise InferenceError(f"{path}: unsupported output type; use .wav, .flac or .ogg")
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sr, subtype=subtype if fmt != "OGG" else None, format=fmt)


def print_summary(done: str, failed: list[str]) -> None:
    """The closing lines of a batch: what was written, then each skipped input's reason."""
    print(done + (f"; {len(failed)} skipped" if failed else ""))
    for reason in failed:
        print(f"  skipped: {reason}")
