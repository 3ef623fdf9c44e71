"""``python infer.py``: resolve the voice, its content encoder and index, then convert or export."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rvc_lora.audio import AudioError, find_audio_files, load_audio
from rvc_lora.inference.setup import (
    InferenceError,
    conversion_setup,
    find_index,
    finish_export,
    print_summary,
    run_config,
    trained_setting,
    write_audio,
)

log = logging.getLogger(__name__)


MODES = ("convert", "export", "export_onnx", "stream")
BACKENDS = ("torch", "onnx")


def run(cfg: DictConfig) -> list[Path]:
    """Convert ``cfg.source`` (file or folder) into ``cfg.output``, or export the voice
    (``mode=export``: RVC's ``.pth``; ``mode=export_onnx``: one ``.onnx``). ``backend=onnx``
    converts with an exported ``.onnx`` voice run by onnxruntime."""
    from rvc_lora.inference.checkpoints import load_voice_model

    if cfg.get("jobs"):
        from rvc_lora.inference.jobs import run_jobs

        return run_jobs(cfg)
    backend, mode = str(cfg.get("backend", "torch")), str(cfg.mode)
    if mode not in MODES:
        raise InferenceError(f"mode={mode}: choose one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise InferenceError(f"backend={backend}: choose one of {', '.join(BACKENDS)}")
    ckpt = Path(cfg.ckpt)
    if not ckpt.exists():
        raise InferenceError(
            f"{ckpt}: no such checkpoint; pass ckpt=<adapter .safetensors, run .ckpt or RVC .pth>"
            + (" or, with backend=onnx, an exported .onnx voice" if backend == "onnx" else "")
        )
    index_path = Path(cfg.index) if cfg.get("index") else find_index(ckpt)
    if backend == "onnx":
        if mode != "convert":
            raise InferenceError(
                f"mode={mode} runs on a PyTorch voice (adapter, .ckpt or .pth); backend=onnx "
                "only converts (mode=convert)"
            )
        return _convert_onnx(cfg, ckpt, index_path)
    model, meta = load_voice_model(ckpt, pretrained_g=cfg.model.get("pretrained_g"))
    trained = run_config(ckpt)
    if mode == "export":
        return [export_voice(model, Path(cfg.output), index_path)]
    if mode == "export_onnx":
        from rvc_lora.inference.onnx_run import export_onnx_voice

        encoder = trained_setting(cfg, trained, "encoder_path") if trained is not None else None
        return [export_onnx_voice(cfg, model, meta, ckpt, trained, index_path, encoder)]
    if mode == "stream":
        from rvc_lora.inference.stream_run import run_stream

        return run_stream(cfg, model.eval(), trained, index_path)
    return convert_sources(cfg, model, meta, trained, index_path)


def _convert_onnx(cfg: DictConfig, ckpt: Path, index_path: Path | None) -> list[Path]:
    from rvc_lora.inference.onnx_run import check_encoder, load_onnx_voice

    voice, trained = load_onnx_voice(cfg, ckpt)
    check_encoder(voice, trained_setting(cfg, trained, "encoder_path"))
    return convert_sources(cfg, voice, voice.meta, trained, index_path)


def export_voice(model, output: Path, index_path: Path | None) -> Path:
    """Merge the adapter into its base and write RVC WebUI's ``.pth`` (+ the index beside it)."""
    from rvc_lora.lora import injection, merge_lora, unload_lora
    from rvc_lora.models import export_rvc_model

    if injection(model) is not None:
        merge_lora(model)
        model = unload_lora(model, merge=True)
    return finish_export(export_rvc_model(model, output, info="exported by rvc-lora"), index_path)


def convert_sources(
    cfg: DictConfig, model, meta: dict, trained: DictConfig | None, index_path: Path | None
) -> list[Path]:
    from rvc_lora.inference.pipeline import MIN_SAMPLES
    from rvc_lora.inference.pitch import parse_pitch

    if not cfg.get("source"):
        raise InferenceError("no source: pass source=<audio file or folder>")
    source, output = Path(cfg.source), Path(cfg.output)
    if source.is_dir():
        files = find_audio_files(source)
        if not files:
            raise InferenceError(f"{source}: no audio files in this folder")
        targets = [output / name for name in output_names(files, source)]
    elif source.is_file():
        files, targets = [source], [output]
    else:
        raise InferenceError(f"{source}: no such file or folder")

    pitch = parse_pitch(cfg.pitch)
    auto_hz = None
    if pitch == "auto":
        auto_hz = _voice_median(cfg, model)
    options, pipeline, index = conversion_setup(
        cfg,
        model,
        trained,
        index_path,
        pitch=0.0 if pitch == "auto" else pitch,
        auto_pitch_hz=auto_hz,
    )
    written, failed = [], []
    for src, dst in _progress(list(zip(files, targets)), enabled=len(files) > 1):
        try:
            audio, _ = load_audio(src, 16000)
            if len(audio) < MIN_SAMPLES:  # HuBERT needs one window; named here, per file
                raise AudioError(
                    f"{src}: too short ({len(audio) / 16:.0f} ms, {len(audio)} samples at 16 kHz);"
                    f" need at least {MIN_SAMPLES / 16:.0f} ms"
                )
            if float(np.abs(audio).max()) < 1e-4:
                raise AudioError(f"{src}: the audio is silent; nothing to convert")
            converted, sr = pipeline.convert(model, audio, options, index)
        except AudioError as exc:
            if len(files) == 1:
                raise
            failed.append(str(exc))
            log.warning("skipped %s", exc)
            continue
        write_audio(dst, converted, sr, str(cfg.output_subtype))
        written.append(dst)
    print_summary(f"converted {len(written)} file(s) into {output}", failed)
    return written


def _voice_median(cfg: DictConfig, model: Any) -> float:
    from rvc_lora.inference.onnx_voice import OnnxVoice
    from rvc_lora.inference.pitch import require_voice_median

    if isinstance(model, OnnxVoice):
        from rvc_lora.inference.onnx_run import onnx_voice_median

        return onnx_voice_median(model)
    return require_voice_median(cfg.ckpt)


def output_names(files: list[Path], source: Path) -> list[Path]:
    """Output path of each file of a ``source`` folder, relative to the output folder.

    ``a.flac`` becomes ``a.wav``; when two sources differ only in their extension, the ``.wav``
    one keeps ``a.wav`` and the others keep their whole name (``a.flac.wav``), so neither
    replaces the other.

    Raises:
        InferenceError: two sources would still share an output (checked before converting).
    """
    rel = [f.relative_to(source) for f in files]
    plain = [r.with_suffix(".wav") for r in rel]
    taken = Counter(plain)
    names = [
        p if taken[p] == 1 or r == p else r.with_name(f"{r.name}.wav") for r, p in zip(rel, plain)
    ]
    first: dict[Path, Path] = {}
    for r, name in zip(rel, names):
        other = first.setdefault(name, r)
        if other != r:
            raise InferenceError(
                f"{source}: {other} and {r} would both be written to {name}; rename one of them"
            )
        if name != r.with_suffix(".wav"):
            print(f"  {r} -> {name} ({r.with_suffix('.wav')} is the output of another file)")
    return names


def _progress(items: list, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description="converting")
