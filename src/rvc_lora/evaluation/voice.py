"""The voice under evaluation: its file, model, content encoder, index and conversion options."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rvc_lora.evaluation.corpus import EvalError

log = logging.getLogger(__name__)

ARTIFACTS = ("adapter.safetensors", "generator.pth")  # what train.py leaves, LoRA / full


@dataclass
class Voice:
    """Everything a conversion needs, loaded once.

    Attributes:
        artifact: the adapter / generator file evaluated; run_dir: where eval.json goes.
        median_hz: the voice's recorded median F0 (None when unknown).
    """

    artifact: Path
    run_dir: Path
    model: Any  # Synthesizer
    pipeline: Any  # ConversionPipeline
    options: Any  # ConvertOptions (pitch 0)
    index: Any  # FeatureIndex | None
    index_path: Path | None
    median_hz: float | None

    def convert(self, audio16k, pitch: float | str = 0.0):
        """``(audio, sr, semitones used)`` for 16 kHz input ``[N]``; ``pitch="auto"`` transposes
        onto the voice's median F0 (:mod:`rvc_lora.inference.pitch`)."""
        if pitch == "auto":
            opts = replace(self.options, auto_pitch_hz=self.median_hz)
        else:
            opts = replace(self.options, pitch=float(pitch))
        audio, sr = self.pipeline.convert(self.model, audio16k, opts, self.index)
        return audio, sr, self.pipeline.last_pitch


def resolve_artifact(run_dir: str | None, ckpt: str | None) -> tuple[Path, Path]:
    """``(artifact, run dir)`` from ``run_dir=`` (its adapter or generator) or ``ckpt=``.

    Raises:
        EvalError: neither or a missing path given, or a run dir without a trained voice.
    """
    from rvc_lora.inference.checkpoints import run_dir_of

    if ckpt:
        path = Path(ckpt)
        if not path.is_file():
            raise EvalError(f"ckpt={path}: no such file; pass an adapter, .pth or .ckpt file")
        return path, Path(run_dir) if run_dir else run_dir_of(path)
    if not run_dir:
        raise EvalError("nothing to evaluate: pass run_dir=<training run dir> or ckpt=<file>")
    folder = Path(run_dir)
    if not folder.is_dir():
        raise EvalError(f"run_dir={folder}: no such folder; pass a training run dir")
    for name in ARTIFACTS:
        if (folder / name).is_file():
            return folder / name, folder
    raise EvalError(
        f"run_dir={folder}: no {' or '.join(ARTIFACTS)} in it (training did not finish?); "
        f"pass a finished run dir, or ckpt=<adapter or checkpoint file>"
    )


def trained_setting(cfg: DictConfig, trained: DictConfig | None, key: str) -> Any:
    """An explicit option, else the voice's training setting (``features.<key>``), else the
    ``features`` default: as ``infer.py`` resolves it."""
    value = cfg.get(key)
    if value is None and trained is not None:
        value = OmegaConf.select(trained, f"features.{key}")
    return value if value is not None else cfg.features.get(key)


def load_voice(cfg: DictConfig, artifact: Path, run_dir: Path) -> Voice:
    """Load ``artifact`` (from :func:`resolve_artifact`) with infer.py's settings from ``cfg``."""
    from rvc_lora.features.hubert import load_content_encoder
    from rvc_lora.inference.checkpoints import load_voice_model
    from rvc_lora.inference.index import FeatureIndex
    from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions
    from rvc_lora.inference.pitch import recorded_voice_median
    from rvc_lora.inference.run import find_index, run_config

    model, _ = load_voice_model(artifact, pretrained_g=cfg.model.get("pretrained_g"))
    trained = run_config(artifact)
    f0_method = trained_setting(cfg, trained, "f0_method")
    options = ConvertOptions(
        pitch=0.0,
        f0_method=f0_method,
        index_rate=float(cfg.index_rate),
        protect=float(cfg.protect),
        rms_mix_rate=float(cfg.rms_mix_rate),
        filter_radius=int(cfg.filter_radius),
        speaker_id=int(cfg.speaker_id),
        seed=cfg.get("seed"),
    )
    encoder = load_content_encoder(
        trained_setting(cfg, trained, "encoder_path"), backend=cfg.features.get("backend", "native")
    )
    rmvpe = None
    if model.f0 and f0_method == "rmvpe":
        from rvc_lora.features.rmvpe import load_rmvpe

        rmvpe = load_rmvpe(trained_setting(cfg, trained, "rmvpe_path"))
    index_path = Path(cfg.index) if cfg.get("index") else find_index(artifact)
    index = None
    if index_path is not None and options.index_rate > 0:
        index = FeatureIndex.load(index_path, expected_dim=model.config.feature_dim)
        log.info("retrieval index %s (index_rate %.2f)", index_path.name, options.index_rate)
    return Voice(
        artifact=artifact,
        run_dir=run_dir,
        model=model,
        pipeline=ConversionPipeline(encoder, rmvpe=rmvpe),
        options=options,
        index=index,
        index_path=index_path if index is not None else None,
        median_hz=recorded_voice_median(artifact),
    )
