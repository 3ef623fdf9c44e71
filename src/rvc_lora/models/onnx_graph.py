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


class F0SynthesisGraph(nn.Module):
    """``audio [B, 1, T*hop]`` from phone ``[B, T, D]``, phone_lengths ``[B]`` (int64), pitch
    ``[B, T]`` (int64, 1..255), pitchf ``[B, T]`` (Hz), sid ``[B]`` (int64), prior_noise
    ``[B, inter, T]`` and source_noise ``[B, T*hop, 1]`` (standard normal)."""

    def __init__(self, model: Synthesizer) -> None:
        super().__init__()
        if not model.f0:
            raise ValueError("F0SynthesisGraph needs a model with pitch; use NoF0SynthesisGraph")
        self.model = model

    def forward(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor,
        pitchf: torch.Tensor,
        sid: torch.Tensor,
        prior_noise: torch.Tensor,
        source_noise: torch.Tensor,
    ) -> torch.Tensor:
        noise = InferNoise(prior_noise, source_noise)
        return self.model.infer(phone, phone_lengths, pitch, pitchf, sid, fast=False, noise=noise)[
            0
        ]


class NoF0SynthesisGraph(nn.Module):
    """As :class:`F0SynthesisGraph` for a model without pitch: no pitch, pitchf, source_noise."""

    def __init__(self, model: Synthesizer) -> None:
        super().__init__()
        if model.f0:
            raise ValueError("NoF0SynthesisGraph is for models without pitch; use F0SynthesisGraph")
        self.model = model

    def forward(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        sid: torch.Tensor,
        prior_noise: torch.Tensor,
    ) -> torch.Tensor:
        noise = InferNoise(prior_noise)
        return self.model.infer(phone, phone_lengths, None, None, sid, fast=False, noise=noise)[0]


def synthesis_graph(model: Synthesizer) -> nn.Module:
    """The graph module of ``model`` (eval mode; the model itself is shared, not copied)."""
    graph = F0SynthesisGraph(model) if model.f0 else NoF0SynthesisGraph(model)
    return graph.eval()
