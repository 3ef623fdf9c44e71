"""The voice under evaluation: its file, model, content encoder, index and conversion options."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

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


def load_voice(cfg: DictConfig, artifact: Path, run_dir: Path) -> Voice:
    """Load ``artifact`` (from :func:`resolve_artifact`) with infer.py's settings from ``cfg``."""
    from rvc_lora.inference.checkpoints import load_voice_model
    from rvc_lora.inference.pitch import recorded_voice_median
    from rvc_lora.inference.setup import conversion_setup, find_index, run_config

    model, _ = load_voice_model(artifact, pretrained_g=cfg.model.get("pretrained_g"))
    trained = run_config(artifact)
    index_path = Path(cfg.index) if cfg.get("index") else find_index(artifact)
    options, pipeline, index = conversion_setup(cfg, model, trained, index_path)
    return Voice(
        artifact=artifact,
        run_dir=run_dir,
        model=model,
        pipeline=pipeline,
        options=options,
        index=index,
        index_path=index_path if index is not None else None,
        median_hz=recorded_voice_median(artifact),
    )
