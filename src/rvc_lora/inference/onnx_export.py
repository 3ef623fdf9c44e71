"""Export a voice (adapter merged into its base, or a plain RVC model) to one ``.onnx`` file.

The graph is :mod:`rvc_lora.models.onnx_graph`'s: ``Synthesizer.infer`` with the noise as
inputs, weight norm folded into plain weights, the posterior encoder dropped. Batch and time
axes are dynamic. Opset 17 runs on every onnxruntime since 1.14 (CPU provider included).

PyTorch's TorchScript-based exporter (``dynamo=False``) is used: it traces the model in a few
seconds, where the torch.export-based one took 50 s for the tiny model, and it needs no
onnxscript. Tracing keeps the shape arithmetic, not Python branches on shapes; the model code
has none on the time axis (the attention window is padded branch-free for this reason), and the
parity tests run every exported family at two lengths.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from rvc_lora.inference.onnx_voice import FORMAT, FORMAT_VERSION, INSTALL_HINT, OnnxError
from rvc_lora.models.nn import fold_weight_norm
from rvc_lora.models.onnx_graph import OUTPUT, graph_inputs, synthesis_graph
from rvc_lora.models.synthesizer import Synthesizer, draw_infer_noise
from rvc_lora.utils.atomic import atomic_path

OPSET = 17
# Example length of the trace: any length works (the axes are dynamic); 64 frames is cheap.
_TRACE_FRAMES = 64
_AXES = {
    "phone": {0: "batch", 1: "frames"},
    "phone_lengths": {0: "batch"},
    "pitch": {0: "batch", 1: "frames"},
    "pitchf": {0: "batch", 1: "frames"},
    "sid": {0: "batch"},
    "prior_noise": {0: "batch", 2: "frames"},
    "source_noise": {0: "batch", 1: "samples"},
    OUTPUT: {0: "batch", 2: "samples"},
}


def _our_version() -> str:
    try:
        return version("rvc-lora")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise OnnxError(f"ONNX export needs onnx: {INSTALL_HINT}") from None
    return onnx


def inference_copy(model: Synthesizer) -> Synthesizer:
    """A plain RVC synthesizer computing what ``model`` computes: a copy with any LoRA adapter
    merged and unloaded, weight norm folded, no posterior encoder, in eval mode on the CPU.
    ``model`` itself is left as it was."""
    from rvc_lora.lora import injection, unload_lora

    plain = copy.deepcopy(model).cpu().float().eval()
    if injection(plain) is not None:
        plain = unload_lora(plain, merge=True)  # merges what is not merged yet
    plain.remove_posterior()
    fold_weight_norm(plain)
    return plain.requires_grad_(False)


def trace_inputs(model: Synthesizer, batch: int = 2, frames: int = _TRACE_FRAMES) -> tuple:
    """Example inputs of the graph, in :func:`graph_inputs` order (random, fixed seed)."""
    g = torch.Generator().manual_seed(0)
    c = model.config
    phone = torch.randn(batch, frames, c.feature_dim, generator=g)
    lengths = torch.full((batch,), frames, dtype=torch.long)
    sid = torch.zeros(batch, dtype=torch.long)
    noise = draw_infer_noise(model, batch, frames, generator=g)
    if not model.f0:
        return phone, lengths, sid, noise.prior
    pitch = torch.randint(1, 256, (batch, frames), generator=g)
    pitchf = torch.rand(batch, frames, generator=g) * 300 + 80
    return phone, lengths, pitch, pitchf, sid, noise.prior, noise.source


def export_onnx(
    model: Synthesizer,
    output: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model``'s inference graph to ``output`` atomically.

    Args:
        model: a synthesizer, with or without a LoRA adapter (merged into a copy here).
        output: the ``.onnx`` path.
        metadata: extra string metadata (adapter, base, training); the model's own (format,
            sr, version, f0, feature_dim, hop_length, spk_embed_dim, config) is always written.
    Returns:
        ``output`` as a Path.
    """
    onnx = import_onnx()
    output = Path(output)
    plain = inference_copy(model)
    graph = synthesis_graph(plain)
    names = graph_inputs(plain)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and the tracer's notes on Python
        # scalars are about export mechanics the parity tests check; they would only confuse.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            trace_inputs(plain),
            buffer,
            dynamo=False,
            input_names=list(names),
            output_names=[OUTPUT],
            dynamic_axes={k: _AXES[k] for k in (*names, OUTPUT)},
            opset_version=OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {**(metadata or {}), **model_metadata(plain)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name, proto.producer_version = "rvc-lora", _our_version()
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
    return output


def model_metadata(model: Synthesizer) -> dict[str, str]:
    """What :func:`~rvc_lora.inference.onnx_voice.config_from_meta` needs to rebuild the config."""
    c = model.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sr": str(c.sr),
        "version": c.version,
        "f0": str(int(model.f0)),
        "feature_dim": str(c.feature_dim),
        "hop_length": str(c.hop_length),
        "spk_embed_dim": str(c.spk_embed_dim),
        "config": json.dumps(c.to_rvc_list()),
        "opset": str(OPSET),
        "exporter": f"rvc-lora {_our_version()}, torch {torch.__version__}",
    }
