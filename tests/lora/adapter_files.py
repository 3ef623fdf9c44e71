"""Helpers for tests that take adapter files apart: read them raw, rewrite them, compare models."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rvc_lora.lora.io import content_sha256


def file_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata exactly as stored, read with safetensors itself."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def header_length(path: Path) -> int:
    """The little-endian u64 that starts every .safetensors file: its JSON header's size."""
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def rewrite(
    src: Path,
    out: Path,
    tensors: dict[str, torch.Tensor] | None = None,
    config: dict | None = None,
    checksum: bool = True,
    **meta: str,
) -> Path:
    """A copy of ``src`` with tensors, the LoRA config (as a dict) or metadata strings replaced.

    The checksum is recomputed (``checksum``), as someone crafting a file would, so that the
    checks behind it are reached; format 1 files have none.
    """
    have, have_meta = file_tensors(src)
    tensors = have if tensors is None else tensors
    meta = {**have_meta, **meta}
    if config is not None:
        meta["lora_config"] = json.dumps(config)
    if meta.get("format_version") == "1":
        meta.pop("content_sha256", None)
    elif checksum:
        meta["content_sha256"] = content_sha256(tensors, meta)
    save_file(tensors, str(out), metadata=meta)
    return out


def state(model: nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    """Every state-dict entry (name, value, requires_grad) in order, cloned."""
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    return [(k, v.detach().clone(), grads.get(k, False)) for k, v in model.state_dict().items()]


def assert_same_state(model: nn.Module, before: list[tuple[str, torch.Tensor, bool]]) -> None:
    """Same keys in the same order, bit-equal values and dtypes, same requires_grad."""
    after = state(model)
    assert [k for k, _, _ in after] == [k for k, _, _ in before]
    for (k, v, g), (_, w, h) in zip(after, before, strict=True):
        assert v.dtype == w.dtype and torch.equal(v, w), k
        assert g == h, k
