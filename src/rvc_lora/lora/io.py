"""Adapter files: ``NAME.safetensors`` with LoRA tensors, config, matched modules, base identity.

Keys are the original module path + ``.lora_A`` / ``.lora_B`` (+ ``.lora_magnitude`` for DoRA)
and extra tensors by their RVC parameter name (``emb_g.weight``). Metadata values are strings:
``format_version``, ``lora_config`` / ``matched_modules`` / ``base_identity`` as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rvc_lora.lora.config import LoraConfig, LoraError
from rvc_lora.lora.inject import (
    inject_lora,
    injection,
    lora_layers,
    rvc_param_name,
    trainable_parameters,
    unload_lora,
)
from rvc_lora.utils.atomic import atomic_path
from rvc_lora.utils.errors import CheckpointError

FORMAT_VERSION = "1"
_META_KEYS = ("format_version", "lora_config", "matched_modules", "base_identity")
# RVC's inference .pth drops the posterior encoder; leaving it out of the identity lets an
# adapter trained on the training generator load onto the exported inference model.
IDENTITY_EXCLUDE: tuple[str, ...] = (r"enc_q\..*",)
_ADAPTER_ATTRS = ("lora_A", "lora_B", "lora_magnitude")


@dataclass
class AdapterFile:
    """Contents of an adapter file: tensors as stored, plus parsed metadata."""

    tensors: dict[str, torch.Tensor]
    config: LoraConfig
    matched: list[str]
    base_identity: dict[str, Any]


def _refuse_merged(model: nn.Module) -> None:
    if any(layer.merged for layer in lora_layers(model).values()):
        raise LoraError("adapters are merged into the base; call unmerge_lora(model) first")


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's tensors under RVC names, adapter tensors dropped, in the model's order.

    ``<w>.base_layer.x`` becomes ``<w>.x``, so the result loads into an un-injected model (and is
    what a training run saves as ``base.pth`` when it starts from a random init).
    """
    layers = lora_layers(model)
    skip = {f"{w}.{a}" for w in layers for a in _ADAPTER_ATTRS}
    out = {}
    for key, t in model.state_dict().items():
        if key in skip:
            continue
        head, sep, tail = key.partition(".base_layer.")
        out[rvc_param_name(f"{head}.{tail}" if sep and head in layers else key)] = t
    return out


def _base_state(model: nn.Module, exclude: Sequence[str]) -> list[tuple[str, torch.Tensor]]:
    # Sorted so the identity does not depend on module order; trained extras and enc_q excluded.
    patterns = tuple(exclude) + IDENTITY_EXCLUDE
    state = base_state_dict(model)
    return sorted((k, t) for k, t in state.items() if not any(re.fullmatch(p, k) for p in patterns))


def base_identity(model: nn.Module, *, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Identity of the base model under any adapter.

    sha256 over names, shapes and bytes of the base's state-dict tensors in sorted order, with
    floating values rounded to float16 first (an fp32 training base and its fp16 export are the
    same base). Left out: adapter tensors, extra-trainable tensors (they train, so they are not
    the base's identity), ``exclude`` regexes and :data:`IDENTITY_EXCLUDE`. ``version``, ``sr``
    and ``f0`` come from model attributes of those names when present.
    """
    _refuse_merged(model)
    info = injection(model)
    if info is not None:
        exclude = tuple(exclude) + tuple(info.config.extra_trainable)
    h = hashlib.sha256()
    entries = _base_state(model, exclude)
    for name, t in entries:
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float16)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    version, sr, f0 = (getattr(model, a, None) for a in ("version", "sr", "f0"))
    return {
        "sha256": h.hexdigest(),
        "n_tensors": len(entries),
        "version": None if version is None else str(version),
        "sr": None if sr is None else int(sr),
        "f0": None if f0 is None else bool(f0),
    }


_identity_of = base_identity  # save_adapter's keyword argument shadows the function's name


def save_adapter(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float16,
    base_identity: dict[str, Any] | None = None,
) -> Path:
    """Write the adapter of an injected model to ``path`` atomically.

    Args:
        model: model after :func:`inject_lora` (unmerged).
        path: target ``.safetensors`` file; its folder is created.
        dtype: storage dtype of every tensor (fp16 default: a few hundred KB per adapter).
        base_identity: extra or overriding identity fields, merged over
            :func:`base_identity` of ``model``.
    Returns:
        The final path.
    """
    info = injection(model)
    if info is None:
        raise LoraError("model has no LoRA adapters to save; call inject_lora(model, cfg) first")
    identity = _identity_of(model)
    identity.update(base_identity or {})
    tensors = {
        k: p.detach().to("cpu", dtype).contiguous().clone()
        for k, p in trainable_parameters(model).items()
    }
    metadata = {
        "format_version": FORMAT_VERSION,
        "lora_config": json.dumps(info.config.to_dict(), sort_keys=True),
        "matched_modules": json.dumps(info.matched),
        "base_identity": json.dumps(identity, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_adapter(path: str | os.PathLike[str]) -> AdapterFile:
    """Read and validate an adapter file without touching any model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: adapter file not found; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors adapter ({err})") from None
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {missing}; not written by save_adapter")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: adapter format {meta['format_version']!r}, this "
            f"version reads {FORMAT_VERSION!r}; upgrade rvc-lora"
        )
    try:
        config = LoraConfig.from_dict(json.loads(meta["lora_config"]))
        matched = list(json.loads(meta["matched_modules"]))
        identity = dict(json.loads(meta["base_identity"]))
    except (ValueError, TypeError) as err:  # JSONDecodeError and LoraError are ValueErrors
        raise CheckpointError(f"{path}: bad adapter metadata ({err})") from None
    return AdapterFile(tensors, config, matched, identity)


def _check_base(model: nn.Module, adapter: AdapterFile, path: Path) -> None:
    mine = _identity_of(model, exclude=adapter.config.extra_trainable)
    theirs = adapter.base_identity
    differ = [
        k
        for k in theirs
        if theirs[k] is not None and mine.get(k) is not None and theirs[k] != mine[k]
    ]
    if differ:
        fields = ", ".join(
            f"{k}: file {theirs[k]!r} vs model {mine[k]!r}" for k in differ if k != "sha256"
        )
        raise CheckpointError(
            f"{path}: adapter was trained on another base (base sha256 file "
            f"{str(theirs.get('sha256'))[:16]} vs model {mine['sha256'][:16]}"
            f"{'; ' + fields if fields else ''}); load the base model it was trained on "
            "(or pass check_base=False)"
        )


def _check_fit(model: nn.Module, adapter: AdapterFile, path: Path) -> None:
    info = injection(model)
    cfg = adapter.config
    if info is None or info.matched != adapter.matched:
        have = set(info.matched) if info else set()
        diff = sorted(have.symmetric_difference(adapter.matched))[:5]
        raise CheckpointError(
            f"{path}: adapter wraps other modules than this model "
            f"(differences: {diff}); inject with the file's config"
        )
    odd = [
        n
        for n, layer in lora_layers(model).items()
        if abs(layer.scale - cfg.scale_for(n)) > 1e-12 * max(1.0, abs(layer.scale))
        or layer.use_dora != cfg.use_dora
    ]
    if odd:
        raise CheckpointError(
            f"{path}: scale or DoRA differs from the model's adapter on "
            f"{odd[:5]}; inject with the file's config"
        )
    params = trainable_parameters(model)
    missing = sorted(set(params) - set(adapter.tensors))
    unexpected = sorted(set(adapter.tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not fit the model (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); inject with the file's config"
        )
    shapes = [
        f"{k} file {list(t.shape)} vs model {list(params[k].shape)}"
        for k, t in adapter.tensors.items()
        if t.shape != params[k].shape
    ]
    if shapes:
        raise CheckpointError(
            f"{path}: shape mismatch: {'; '.join(shapes[:5])}; "
            "was it trained with another rank or base?"
        )


def load_adapter(
    model: nn.Module, path: str | os.PathLike[str], *, check_base: bool = True
) -> LoraConfig:
    """Load an adapter file into ``model``, injecting it from the file's config if needed.

    An already injected model must match the file (same wrapped modules, scales, DoRA, keys and
    shapes). Values are cast to each parameter's dtype. On any error the model is left as it
    was (an injection done here is undone).

    Returns:
        The file's :class:`LoraConfig`.
    Raises:
        CheckpointError: unreadable file, different base, or tensors that do not fit.
    """
    path = Path(path)
    adapter = read_adapter(path)
    _refuse_merged(model)
    if check_base:
        _check_base(model, adapter, path)
    injected_here = injection(model) is None
    if injected_here:
        try:
            inject_lora(model, adapter.config)
        except LoraError as err:
            raise CheckpointError(f"{path}: its config does not fit this model: {err}") from None
    try:
        _check_fit(model, adapter, path)
        params = trainable_parameters(model)
        with torch.no_grad():
            for key, t in adapter.tensors.items():
                params[key].copy_(t.to(device=params[key].device, dtype=params[key].dtype))
    except BaseException:
        if injected_here:
            unload_lora(model, merge=False)
        raise
    return adapter.config
