"""Base identity: which base model an adapter was trained on, and the check made before use.

An adapter is a delta on one particular base; applied to another it gives plausible-sounding
wrong audio. Its file records the base's identity, and both ``load_adapter`` and the voice bank
refuse a file whose identity is incomplete or differs from the model's (:func:`check_identity`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rvc_lora.lora.config import LoraError
from rvc_lora.lora.inject import injection, lora_layers, rvc_param_name
from rvc_lora.utils.errors import CheckpointError

# RVC's inference .pth drops the posterior encoder; leaving it out of the identity lets an
# adapter trained on the training generator load onto the exported inference model.
IDENTITY_EXCLUDE: tuple[str, ...] = (r"enc_q\..*",)
# Without any one of these an adapter could bind to a base it was not trained on.
REQUIRED_IDENTITY: tuple[str, ...] = ("sha256", "version", "sr", "f0")
ADAPTER_ATTRS = ("lora_A", "lora_B", "lora_magnitude")


def refuse_merged(model: nn.Module) -> None:
    """Raise LoraError when adapters are merged into the base (its weights are not the base's)."""
    if any(layer.merged for layer in lora_layers(model).values()):
        raise LoraError("adapters are merged into the base; call unmerge_lora(model) first")


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's tensors under RVC names, adapter tensors dropped, in the model's order.

    ``<w>.base_layer.x`` becomes ``<w>.x``, so the result loads into an un-injected model (and is
    what a training run saves as ``base.pth`` when it starts from a random init).
    """
    layers = lora_layers(model)
    skip = {f"{w}.{a}" for w in layers for a in ADAPTER_ATTRS}
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
    refuse_merged(model)
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


def _short(value: Any) -> str:
    # A crafted file can hold a megabyte "version"; the message stays one short line.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(key: str) -> str:
    # Field names come from the file too: one line, bounded.
    return " ".join(str(key).split())[:40]


def _same(a: Any, b: Any) -> bool:
    # Typed: JSON's 1 is not the model's True, nor 40000.0 its sample rate 40000.
    return type(a) is type(b) and a == b


def check_identity(
    theirs: Mapping[str, Any], mine: Mapping[str, Any], where: str, fix: str
) -> None:
    """Refuse an adapter whose recorded base identity is incomplete or is not ``mine``.

    Every :data:`REQUIRED_IDENTITY` field must be recorded, and sha256 must be a hash. A field
    recorded as null matches only a base that does not know it either (a plain module without a
    ``version`` attribute); fields beyond the required ones are compared when both sides have
    them.

    Args:
        theirs: the identity recorded in the adapter file.
        mine: :func:`base_identity` of the model it is about to be applied to.
        where: the file (or voice) named at the start of the message.
        fix: what the user can do about a different base, e.g. "load the base it was trained on".
    Raises:
        CheckpointError: one line naming the missing or differing fields.
    """
    lacking = [k for k in REQUIRED_IDENTITY if k not in theirs]
    if not lacking and not isinstance(theirs["sha256"], str):
        lacking = ["sha256"]
    if lacking:
        raise CheckpointError(
            f"{where}: adapter's base identity lacks {', '.join(lacking)} (stripped, or not "
            f"written by save_adapter), so nothing ties it to a base; {fix}"
        )
    differ = [
        k
        for k in theirs
        if (k in REQUIRED_IDENTITY or (theirs[k] is not None and mine.get(k) is not None))
        and not _same(theirs[k], mine.get(k))
    ]
    if differ:
        fields = "".join(
            f"; {_field(k)}: file {_short(theirs[k])} vs model {_short(mine.get(k))}"
            for k in differ
            if k != "sha256"
        )
        raise CheckpointError(
            f"{where}: adapter was trained on another base (base sha256 file "
            f"{theirs['sha256'][:16]} vs model {str(mine.get('sha256'))[:16]}{fields}); {fix}"
        )
