"""A voice exported to ONNX (``infer.py mode=export_onnx``), run by onnxruntime.

:class:`OnnxVoice` stands where the conversion pipeline expects a ``Synthesizer``: it has its
``config``, ``f0`` and ``infer`` (same arguments and output), so ``backend=onnx`` reuses the
whole pipeline (F0, index, protect, RMS mix, chunking) with onnxruntime doing the synthesis.
The graph takes its noise as inputs; ``infer`` draws it from torch's RNG in the order
``Synthesizer.infer`` does, so a seeded conversion gives the PyTorch model's output.

The file's metadata (``metadata_props``) says what the voice is; every key is written by
``rvc_lora.inference.onnx_export`` and checked here before the voice is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rvc_lora.models.onnx_graph import OUTPUT, graph_inputs
from rvc_lora.models.presets import SynthConfig
from rvc_lora.models.synthesizer import InferNoise, crop_frames, draw_infer_noise
from rvc_lora.utils.errors import RvcLoraError, first_line

FORMAT = "rvc-lora-voice"
FORMAT_VERSION = "1"
# Keys every exported voice holds; the rest (adapter, base, encoder, training) may be empty.
REQUIRED_META = (
    "format",
    "format_version",
    "sr",
    "version",
    "f0",
    "feature_dim",
    "hop_length",
    "spk_embed_dim",
    "config",
)
INSTALL_HINT = "pip install -e '.[onnx]' (onnx, onnxruntime)"
_INT_INPUTS = {"phone_lengths", "pitch", "sid"}


class OnnxError(RvcLoraError, ValueError):
    """An ONNX voice that cannot be used, or onnx/onnxruntime missing: one line with the fix."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise OnnxError(f"backend=onnx needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def config_from_meta(meta: dict[str, str], path: Path) -> tuple[SynthConfig, bool]:
    """``(SynthConfig, f0)`` of an exported voice; :class:`OnnxError` for anything missing or
    inconsistent (the metadata must say the same as the graph's own shapes)."""
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        raise OnnxError(
            f"{path}: not an rvc-lora ONNX voice (metadata {missing} missing); export it with "
            f"`python infer.py mode=export_onnx ckpt=... output={path.name}`"
        )
    if meta["format"] != FORMAT or meta["format_version"] != FORMAT_VERSION:
        raise OnnxError(
            f"{path}: format {meta['format']!r} v{meta['format_version']}, this rvc-lora reads "
            f"{FORMAT!r} v{FORMAT_VERSION}; export the voice again with this version"
        )
    try:
        config = SynthConfig.from_rvc_list(json.loads(meta["config"]), meta["version"])
        f0 = {"1": True, "0": False}[meta["f0"]]
        stated = {k: int(meta[k]) for k in ("sr", "feature_dim", "hop_length", "spk_embed_dim")}
    except (ValueError, KeyError, TypeError) as exc:
        raise OnnxError(f"{path}: unreadable voice metadata ({first_line(exc)})") from None
    actual = {k: getattr(config, k) for k in stated}
    differ = {k: (stated[k], actual[k]) for k in actual if stated[k] != actual[k]}
    if differ:
        raise OnnxError(f"{path}: metadata contradicts its own config {differ}; export it again")
    return config, f0


class OnnxVoice:
    """An exported voice in an onnxruntime session, with ``Synthesizer.infer``'s interface.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (default: torch's thread count, so both
            backends are compared on the same cores).
        providers: onnxruntime execution providers (default CPU).
    Raises:
        OnnxError: onnxruntime missing, the file unreadable or truncated, or its metadata or
            inputs not those of an rvc-lora voice (one line each).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxError(f"{self.path}: no such file; check the path")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the file's problems are raised below
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise OnnxError(
                f"{self.path}: not a readable ONNX model ({first_line(exc)}); truncated or "
                f"not an export? export it again with `python infer.py mode=export_onnx`"
            ) from None
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config, self.f0 = config_from_meta(self.meta, self.path)
        self._check_io()

    def _check_io(self) -> None:
        expected = graph_inputs(self)
        inputs = self.session.get_inputs()
        names = tuple(i.name for i in inputs)
        outputs = [o.name for o in self.session.get_outputs()]
        if names != expected or outputs != [OUTPUT]:
            raise OnnxError(
                f"{self.path}: graph inputs {list(names)} / outputs {outputs}, expected "
                f"{list(expected)} / {[OUTPUT]} for a voice with f0={int(self.f0)}; export it again"
            )
        for i in inputs:
            want = "tensor(int64)" if i.name in _INT_INPUTS else "tensor(float)"
            if i.type != want:
                raise OnnxError(f"{self.path}: input {i.name} is {i.type}, expected {want}")

    def run(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor,
        noise: InferNoise,
    ) -> np.ndarray:
        """One session run: ``[B, 1, T*hop]`` float32."""
        values = {
            "phone": phone,
            "phone_lengths": phone_lengths,
            "pitch": pitch,
            "pitchf": pitchf,
            "sid": sid,
            "prior_noise": noise.prior,
            "source_noise": noise.source,
        }
        feed = {}
        for name in graph_inputs(self):
            value = values[name]
            if value is None:
                raise ValueError(f"this voice uses pitch (f0=1): pass {name}")
            dtype = np.int64 if name in _INT_INPUTS else np.float32
            feed[name] = np.ascontiguousarray(value.detach().cpu().numpy(), dtype=dtype)
        return self.session.run([OUTPUT], feed)[0]

    def infer(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None = None,
        pitchf: torch.Tensor | None = None,
        sid: torch.Tensor | None = None,
        *,
        crop: tuple[int, int] | None = None,
        fast: bool = True,
        noise: InferNoise | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        """``Synthesizer.infer`` by onnxruntime: ``(audio [B, 1, T_out*hop], None, None)``.

        The noise is drawn as the PyTorch model draws it (same RNG, order and shapes) unless
        given. ``crop`` drops frames of output each side; ``fast`` has no meaning here.
        """
        del fast
        b, t = phone.shape[0], phone.shape[1]
        if sid is None:
            sid = torch.zeros(b, dtype=torch.long)
        if noise is None:
            noise = draw_infer_noise(self, b, t)
        out = torch.from_numpy(self.run(phone, phone_lengths, pitch, pitchf, sid, noise))
        if crop is not None:
            out = crop_frames(out, crop, self.config.hop_length)
        return out.to(phone.device), None, None  # no mask or latents: the graph returns audio
