"""The synthesizer's inference pass as a graph with every input explicit, for ONNX export.

``Synthesizer.infer`` draws two noises from torch's RNG; an exported graph must not (ONNX's
random ops have their own generator, so output would differ from PyTorch and between runs).
Here they are inputs, in the layout :func:`~rvc_lora.models.synthesizer.draw_infer_noise`
gives, so the ONNX file and the PyTorch model compute the same thing from the same draws.
This file knows nothing of onnx itself (``rvc_lora.inference.onnx_export`` does the export).
"""

from __future__ import annotations

import torch
from torch import nn

from rvc_lora.models.synthesizer import InferNoise, Synthesizer

# The graph's inputs, in order, for models with and without pitch, and its one output.
F0_INPUTS = ("phone", "phone_lengths", "pitch", "pitchf", "sid", "prior_noise", "source_noise")
NOF0_INPUTS = ("phone", "phone_lengths", "sid", "prior_noise")
OUTPUT = "audio"


def graph_inputs(model: Synthesizer) -> tuple[str, ...]:
    return F0_INPUTS if model.f0 else NOF0_INPUTS


class SynthesisGraph(nn.Module):
    """``audio [B, 1, T*hop]`` from the inputs :func:`graph_inputs` names, in that order:
    phone ``[B, T, D]``, phone_lengths ``[B]`` (int64), pitch ``[B, T]`` (int64, 1..255) and
    pitchf ``[B, T]`` (Hz) for models with pitch, sid ``[B]`` (int64), prior_noise
    ``[B, inter, T]`` and, with pitch, source_noise ``[B, T*hop, 1]`` (standard normal)."""

    def __init__(self, model: Synthesizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(graph_inputs(self.model), inputs, strict=True))
        noise = InferNoise(given["prior_noise"], given.get("source_noise"))
        return self.model.infer(
            given["phone"], given["phone_lengths"], given.get("pitch"), given.get("pitchf"),
            given["sid"], fast=False, noise=noise,
        )[0]  # fmt: skip


def synthesis_graph(model: Synthesizer) -> nn.Module:
    """The graph module of ``model`` (eval mode; the model itself is shared, not copied)."""
    return SynthesisGraph(model).eval()
