"""Adapter files: ``NAME.safetensors`` with LoRA tensors, config, matched modules, base identity.

Keys are the original module path + ``.lora_A`` / ``.lora_B`` (+ ``.lora_magnitude`` for DoRA)
and extra tensors by their RVC parameter name (``emb_g.weight``). Metadata values are strings:
``format_version``, ``lora_config`` / ``matched_modules`` / ``base_identity`` as JSON, and
``content_sha256`` over all of these and the tensors (:func:`content_sha256`).

Adapter files come from anywhere, so :func:`read_adapter` trusts nothing in them: every problem
is one :class:`CheckpointError` naming the file, raised before any model is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rvc_lora.lora.config import LoraConfig, LoraError
from rvc_lora.lora.identity import (
    IDENTITY_EXCLUDE,
    base_identity,
    base_state_dict,
    check_identity,
    refuse_merged,
)
from rvc_lora.lora.inject import (
    inject_lora,
    injection,
    lora_layers,
    trainable_parameters,
    unload_lora,
)
from rvc_lora.utils.atomic import atomic_path
from rvc_lora.utils.errors import CheckpointError

# 2: rank_pattern / alpha_pattern as ordered [regex, value] pairs, and a content checksum.
# Format 1 wrote the patterns as JSON objects with sorted keys, which loses the order that
# decides which pattern wins.
FORMAT_VERSION = "2"
READABLE_FORMATS = ("1", "2")
_META_KEYS = ("format_version", "lora_config", "matched_modules", "base_identity")
# Half and single precision are what save_adapter writes; double is harmless to read.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Module and tensor names are dotted Python identifiers; anything else is refused before a name
# from the file can reach a message (a newline, a megabyte of text).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_MAX_NAME = 200

__all__ = [
    "IDENTITY_EXCLUDE",
    "AdapterFile",
    "base_identity",
    "base_state_dict",
    "load_adapter",
    "read_adapter",
    "save_adapter",
]


@dataclass
class AdapterFile:
    """Contents of an adapter file: tensors as stored, plus parsed metadata."""

    tensors: dict[str, torch.Tensor]
    config: LoraConfig
    matched: list[str]
    base_identity: dict[str, Any]


def content_sha256(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """sha256 over the metadata strings and each tensor's name, dtype, shape and bytes.

    A flipped byte that still parses (alpha 16.0 -> 36.0, one fp16 value) would otherwise load
    as a different adapter that looks fine. It detects damage, not forgery: anyone can
    recompute it, which is why everything else is checked too.
    """
    h = hashlib.sha256()
    for key in _META_KEYS:
        value = metadata[key].encode()
        h.update(f"{key}:{len(value)}:".encode() + value)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{len(name)}:{name}|{t.dtype}|{tuple(tensors[name].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    metadata["content_sha256"] = content_sha256(tensors, metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= _MAX_NAME and bool(_NAME.fullmatch(value))


def _one_line(err: BaseException) -> str:
    # Messages from safetensors, json or torch can span lines or run long; ours stay one line.
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _parse_json(path: Path, meta: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: metadata {key} is not JSON ({_one_line(err)})") from None
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path}: metadata {key} is a JSON {type(value).__name__}, not a {kind.__name__}; "
            "the file is damaged or not written by save_adapter"
        )
    return value


def _read_config(path: Path, raw: dict[str, Any], matched: list[str]) -> LoraConfig:
    try:
        config = LoraConfig.from_dict(raw)
    except (LoraError, TypeError) as err:
        raise CheckpointError(f"{path}: bad LoRA config in metadata ({_one_line(err)})") from None
    stray = [
        m
        for m in matched
        if not any(re.fullmatch(p, m) for p in config.targets)
        or any(re.fullmatch(p, m) for p in config.exclude)
    ]
    if stray:
        raise CheckpointError(
            f"{path}: matched modules {stray[:5]} are not targets of the file's own config; "
            "the file is damaged"
        )
    for name in ("rank_pattern", "alpha_pattern"):
        if not isinstance(raw.get(name), Mapping):
            continue
        # Format 1 sorted these keys, so when two patterns with different values match one
        # module, the one that won in training cannot be told from the file.
        for module in matched:
            hits = [(p, v) for p, v in getattr(config, name) if re.fullmatch(p, module)]
            if len({v for _, v in hits}) > 1:
                raise CheckpointError(
                    f"{path}: {name} patterns {[p for p, _ in hits]} all match {module!r} with "
                    "different values, and this older file stored them sorted, so their order "
                    "is lost; re-save the adapter from its training checkpoint (.ckpt) with "
                    "this version"
                )
    return config


def _check_tensors(path: Path, af: AdapterFile) -> None:
    """Finiteness, keys and ranks: what the file alone can tell beyond its dtypes."""
    tensors = af.tensors
    for key, t in tensors.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise CheckpointError(
                f"{path}: tensor {key!r} has {bad} NaN/Inf values; the adapter is unusable "
                "(training diverged?): use an earlier checkpoint or retrain"
            )
    cfg = af.config
    names = ("lora_A", "lora_B") + (("lora_magnitude",) if cfg.use_dora else ())
    layer_keys = {f"{m}.{n}" for m in af.matched for n in names}
    extras = {k for k in tensors if any(re.fullmatch(p, k) for p in cfg.extra_trainable)}
    missing = sorted(layer_keys - set(tensors))
    unexpected = sorted(set(tensors) - layer_keys - extras)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not fit the file's own config and modules (missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}); the file is damaged"
        )
    for m in af.matched:
        a, b = tensors[f"{m}.lora_A"], tensors[f"{m}.lora_B"]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise CheckpointError(
                f"{path}: {m}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not "
                "[r, in] and [out, r]; the file is damaged"
            )
        if a.shape[0] != cfg.rank_for(m):
            raise CheckpointError(
                f"{path}: {m}: tensors have rank {a.shape[0]}, its config says "
                f"{cfg.rank_for(m)}; the file is damaged"
            )


def read_adapter(path: str | os.PathLike[str]) -> AdapterFile:
    """Read and validate an adapter file without touching any model.

    Raises:
        CheckpointError: unreadable file, bad metadata, or tensors that are not finite floats
            laid out as the file's own config says (keys, ranks).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: adapter file not found; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError) as err:
        raise CheckpointError(
            f"{path}: not a readable .safetensors adapter ({_one_line(err)})"
        ) from None
    for key, t in tensors.items():
        if not _is_name(key):
            raise CheckpointError(
                f"{path}: tensor name {key[:40]!r} is not a dotted parameter name; the file is "
                "damaged or not an adapter"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {key!r} is {t.dtype}, adapter tensors are floating point "
                "(fp16/bf16/fp32); the file is damaged or not an adapter"
            )
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {missing}; not written by save_adapter")
    if meta["format_version"] not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: adapter format {meta['format_version'][:20]!r}, this version reads "
            f"{list(READABLE_FORMATS)}; upgrade rvc-lora"
        )
    if meta["format_version"] != "1" and meta.get("content_sha256") != content_sha256(
        tensors, meta
    ):
        raise CheckpointError(
            f"{path}: content does not match its checksum (damaged in transit or edited); "
            "download or save it again"
        )
    raw = _parse_json(path, meta, "lora_config", dict)
    matched = _parse_json(path, meta, "matched_modules", list)
    identity = _parse_json(path, meta, "base_identity", dict)
    if not all(_is_name(m) for m in matched) or len(set(matched)) != len(matched):
        raise CheckpointError(f"{path}: matched_modules is not a list of distinct module names")
    adapter = AdapterFile(tensors, _read_config(path, raw, matched), matched, identity)
    _check_tensors(path, adapter)
    return adapter


def _check_base(model: nn.Module, adapter: AdapterFile, path: Path) -> None:
    mine = _identity_of(model, exclude=adapter.config.extra_trainable)
    check_identity(
        adapter.base_identity,
        mine,
        str(path),
        "load the base model it was trained on (or pass check_base=False)",
    )


def _check_fit(model: nn.Module, adapter: AdapterFile, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors cast to the model's parameters, once all of them fit exactly."""
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
    cast = {
        k: t.to(device=params[k].device, dtype=params[k].dtype) for k, t in adapter.tensors.items()
    }
    # fp32 values beyond fp16's range become Inf in a half-precision model.
    overflow = [k for k, t in cast.items() if not bool(torch.isfinite(t).all())]
    if overflow:
        raise CheckpointError(
            f"{path}: {overflow[:5]} overflow the model's {params[overflow[0]].dtype}; load "
            "the adapter into a float32 model"
        )
    return cast


def load_adapter(
    model: nn.Module, path: str | os.PathLike[str], *, check_base: bool = True
) -> LoraConfig:
    """Load an adapter file into ``model``, injecting it from the file's config if needed.

    An already injected model must match the file (same wrapped modules, scales, DoRA, keys and
    shapes). Values are cast to each parameter's dtype. Everything is checked before the first
    value is copied, and on any error the model is left as it was (an injection done here is
    undone).

    Args:
        model: the base model, plain or already injected (unmerged).
        path: the adapter ``.safetensors`` file.
        check_base: refuse a file whose recorded base identity is incomplete or not this
            model's; False is the one way to load such a file anyway.
    Returns:
        The file's :class:`LoraConfig`.
    Raises:
        CheckpointError: unreadable or damaged file, different base, or tensors that do not fit.
    """
    path = Path(path)
    adapter = read_adapter(path)
    refuse_merged(model)
    if check_base:
        _check_base(model, adapter, path)
    injected_here = injection(model) is None
    if injected_here:
        try:
            inject_lora(model, adapter.config)
        except LoraError as err:
            raise CheckpointError(
                f"{path}: its config does not fit this model: {_one_line(err)}"
            ) from None
    try:
        values = _check_fit(model, adapter, path)
        params = trainable_parameters(model)
        with torch.no_grad():
            for key, t in values.items():
                params[key].copy_(t)
    except BaseException:
        if injected_here:
            unload_lora(model, merge=False)
        raise
    return adapter.config
