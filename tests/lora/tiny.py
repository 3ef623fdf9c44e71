"""Tiny models for the LoRA invariant battery: one adaptable layer in each kind x weight norm."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from rvc_lora.lora import LoraConfig, lora_layers
from rvc_lora.models.nn import apply_weight_norm

KINDS = ["linear", "conv_k1", "conv_k3_d3", "conv_k5_d5", "convT_k20_s10"]
FLAVOURS = ["plain", "legacy", "param"]
COMBOS = [(k, f) for k in KINDS for f in FLAVOURS]
COMBO_IDS = [f"{k}-{f}" for k, f in COMBOS]
TARGET = r"body\.0"


def _layer(kind: str) -> nn.Module:
    return {
        "linear": lambda: nn.Linear(8, 6),
        "conv_k1": lambda: nn.Conv1d(8, 6, 1),
        "conv_k3_d3": lambda: nn.Conv1d(8, 6, 3, dilation=3, padding=3),
        "conv_k5_d5": lambda: nn.Conv1d(8, 6, 5, dilation=5, padding=10),
        "convT_k20_s10": lambda: nn.ConvTranspose1d(8, 4, 20, stride=10, padding=5),
    }[kind]()


@torch.no_grad()
def with_weight_norm(layer: nn.Module, flavour: str) -> nn.Module:
    """Apply a weight-norm flavour, then move g away from ||v|| (and flip one sign), as after
    training: with g == ||v|| a wrapper that confused v and W would still pass."""
    if flavour == "plain":
        return layer
    if flavour == "legacy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated, but RVC's flavour
            layer = torch.nn.utils.weight_norm(layer)
        g = layer.weight_g
    else:
        layer = apply_weight_norm(layer)
        g = layer.parametrizations.weight.original0
    g.mul_(torch.rand_like(g) + 0.5)
    g.view(-1)[0].neg_()
    return layer


class Tiny(nn.Module):
    """emb (extra-trainable candidate) -> body.0 (the target) -> post (frozen, never targeted)."""

    def __init__(self, kind: str, flavour: str) -> None:
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(3, 8)
        layer = _layer(kind)
        self.body = nn.ModuleList([with_weight_norm(layer, flavour)])
        out = 6 if kind != "convT_k20_s10" else 4
        post = nn.Linear(out, out) if kind == "linear" else nn.Conv1d(out, out, 1)
        self.post = with_weight_norm(post, flavour)

    def forward(self, x: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        e = self.emb(sid)  # [B, 8]
        h = x + (e[:, None, :] if self.kind == "linear" else e[:, :, None])
        return self.post(self.body[0](h))


def make_model(kind: str, flavour: str, seed: int = 0) -> Tiny:
    """The same seed gives the same weights (legacy weight norm cannot be deep-copied)."""
    torch.manual_seed(seed)
    return Tiny(kind, flavour)


def make_input(kind: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[2, 7, 8]`` (linear) or ``[2, 8, 16]`` (conv), sid ``[2]``."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 7, 8) if kind == "linear" else (2, 8, 16)
    return torch.randn(*shape, generator=g), torch.tensor([0, 2])


def config(**kw) -> LoraConfig:
    kw.setdefault("targets", [TARGET])
    return LoraConfig(**kw)


@torch.no_grad()
def randomize_adapter(model: nn.Module, seed: int = 7, relative: float | None = None) -> None:
    """Non-zero B (and a perturbed DoRA magnitude) so that the adapter changes the output.

    ``relative`` rescales each B so that ||delta W|| = relative * ||W|| (deep models saturate
    with a fixed-size B when their weights are small).
    """
    g = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)
        layer.lora_A.add_(torch.randn(layer.lora_A.shape, generator=g) * 0.1)
        if relative is not None:
            ratio = layer.delta_weight().norm() / layer.base_weight().norm()
            layer.lora_B.mul_(relative / ratio)
        if layer.lora_magnitude is not None:
            m = layer.lora_magnitude
            m.mul_(1 + 0.2 * torch.rand(m.shape, generator=g))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


combos = pytest.mark.parametrize(("kind", "flavour"), COMBOS, ids=COMBO_IDS)
variants = pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
VARIANT_KW = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}
