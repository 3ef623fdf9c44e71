"""What ``infer.py`` does for ONNX: ``mode=export_onnx`` (a voice and what it came from, into one
file) and ``backend=onnx`` (the training facts a conversion needs, read back from that file).

An exported voice has no run directory beside it, so the export records in its metadata what
conversion otherwise reads from the run: the F0 method and content encoder the voice was
trained with, and its median F0 (``pitch=auto``). The encoder is recorded by name and sha256;
a conversion with another encoder file is refused (same-width features from another encoder
give wrong audio without any error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rvc_lora.download_wheel import sha256_of
from rvc_lora.inference.onnx_voice import OnnxError, OnnxVoice
from rvc_lora.inference.pitch import MEDIAN_KEY, recorded_voice_median
from rvc_lora.inference.setup import finish_export


def export_onnx_voice(
    cfg: DictConfig,
    model: Any,
    info: dict[str, Any],
    ckpt: Path,
    trained: DictConfig | None,
    index_path: Path | None,
    encoder_path: str | None = None,
) -> Path:
    """``infer.py mode=export_onnx``: write ``cfg.output`` (+ the index beside it).

    ``encoder_path``: the content encoder the voice was trained with (recorded when given).
    """
    from rvc_lora.inference.onnx_export import export_onnx
    from rvc_lora.lora import base_identity

    output = Path(cfg.output)
    if output.suffix.lower() != ".onnx":
        raise OnnxError(f"output={output}: an ONNX voice is written to a .onnx file")
    meta = {
        "source": ckpt.name,
        "kind": str(info["kind"]),
        "base_sha256": base_identity(model)["sha256"],
        "base_file": Path(info["base"]).name if info.get("base") else "",
        "adapter_file": ckpt.name if info["kind"] == "adapter" else "",
        "adapter_sha256": sha256_of(ckpt) if info["kind"] == "adapter" else "",
        "lora_targets": str(len(info.get("lora_targets") or [])),
    }
    if trained is not None:
        method = OmegaConf.select(trained, "features.f0_method")
        meta["trained_f0_method"] = str(method) if method else ""
    if encoder_path and Path(encoder_path).is_file():
        meta["encoder_file"] = Path(encoder_path).name
        meta["encoder_sha256"] = sha256_of(Path(encoder_path))
    median = recorded_voice_median(ckpt)
    if median is not None:
        meta[MEDIAN_KEY] = repr(float(median))
    return finish_export(export_onnx(model, output, meta), index_path)


def load_onnx_voice(cfg: DictConfig, ckpt: Path) -> tuple[OnnxVoice, DictConfig | None]:
    """``backend=onnx``: the voice, and a stand-in for its run's config built from the
    metadata (``features.f0_method`` the voice was trained with), or None."""
    if ckpt.suffix.lower() != ".onnx":
        raise OnnxError(
            f"{ckpt}: backend=onnx takes an exported .onnx voice; make one with "
            f"`python infer.py mode=export_onnx ckpt={ckpt.name} output=voice.onnx`"
        )
    voice = OnnxVoice(ckpt)
    method = voice.meta.get("trained_f0_method")
    trained = OmegaConf.create({"features": {"f0_method": method}}) if method else None
    return voice, trained


def check_encoder(voice: OnnxVoice, encoder_path: str | None) -> None:
    """Refuse a content encoder other than the one the voice was trained with (when recorded)."""
    want = voice.meta.get("encoder_sha256")
    if not want or not encoder_path or not Path(encoder_path).is_file():
        return  # nothing recorded, or the loader reports the missing file itself
    have = sha256_of(Path(encoder_path))
    if have != want:
        name = voice.meta.get("encoder_file", "?")
        raise OnnxError(
            f"{voice.path}: trained with content encoder {name} (sha256 {want[:12]}...), but "
            f"encoder_path={encoder_path} is another file (sha256 {have[:12]}...); pass "
            f"encoder_path=<path of {name}>"
        )


def onnx_voice_median(voice: OnnxVoice) -> float:
    """The voice's median F0 recorded at export (``pitch=auto``), or a one-line error."""
    try:
        value = float(voice.meta.get(MEDIAN_KEY, "nan"))
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise OnnxError(
            f"{voice.path}: pitch=auto needs the voice's median F0, which this export does not "
            f"record (exported from a file without a run's run_info.json); pass pitch=N"
        )
    return value
