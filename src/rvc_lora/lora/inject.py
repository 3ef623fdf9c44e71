"""Put LoRA wrappers into a model, and take them out again.

What :func:`inject_lora` did is recorded on the model itself (:class:`Injection`, attribute
``_rvc_lora``), so trainable parameters are found structurally: wrapper instances plus the
recorded extra tensors, never by matching substrings of parameter names.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from rvc_lora.lora.config import LoraConfig, LoraError
from rvc_lora.lora.layers import LoraConv1d, LoraConvTranspose1d, LoraLayer, LoraLinear

_ATTR = "_rvc_lora"
# Order matters only for readability: ConvTranspose1d is not a Conv1d subclass.
WRAPPERS: tuple[tuple[type[nn.Module], type[LoraLayer]], ...] = (
    (nn.Linear, LoraLinear),
    (nn.Conv1d, LoraConv1d),
    (nn.ConvTranspose1d, LoraConvTranspose1d),
)
# Parametrized weight norm stores g/v under these names; RVC (and nn.py's state-dict hook) call
# them weight_g / weight_v, which is what users write in `extra_trainable` and adapter files.
_PARAM_WN = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


@dataclass
class Injection:
    """What :func:`inject_lora` did: config, wrapped module names, extra tensors (name -> path)."""

    config: LoraConfig
    matched: list[str]
    extras: dict[str, str]
    requires_grad: dict[str, bool] = field(default_factory=dict, repr=False)


def injection(model: nn.Module) -> Injection | None:
    """The :class:`Injection` recorded on ``model``, or None if it carries no adapter."""
    return getattr(model, _ATTR, None)


def rvc_param_name(path: str) -> str:
    """``a.parametrizations.weight.original0`` -> ``a.weight_g`` (RVC's name); others unchanged."""
    for src, dst in _PARAM_WN.items():
        if path == src or path.endswith("." + src):
            return path[: len(path) - len(src)] + dst
    return path


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Qualified name -> wrapper, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _nearby(name_pattern: str, names: list[str], n: int = 5) -> list[str]:
    # Show names that look like the pattern, so a typo or a wrong index is obvious.
    literal = re.sub(r"\\(.)", r"\1", name_pattern)
    return difflib.get_close_matches(literal, names, n=n, cutoff=0.3) or names[:n]


def _match_modules(model: nn.Module, cfg: LoraConfig) -> list[tuple[str, nn.Module]]:
    names = [n for n, _ in model.named_modules() if n]
    used: set[str] = set()
    picked: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        hits = [p for p in cfg.targets if re.fullmatch(p, name)] if name else []
        used.update(hits)
        if not hits or any(re.fullmatch(p, name) for p in cfg.exclude):
            continue
        if not isinstance(module, tuple(w for w, _ in WRAPPERS)):
            raise LoraError(
                f"target {name!r} (pattern {hits[0]!r}) is a "
                f"{type(module).__name__}; LoRA supports Linear, Conv1d and "
                "ConvTranspose1d; narrow the pattern or add it to exclude"
            )
        picked.append((name, module))
    for pat in cfg.targets:
        if pat not in used:
            raise LoraError(
                f"target pattern {pat!r} matched no module; nearby names: "
                f"{_nearby(pat, names)}; fix targets"
            )
    if not picked:
        raise LoraError(f"exclude {cfg.exclude} removed every target; nothing to adapt")
    return picked


def _match_extras(model: nn.Module, cfg: LoraConfig, wrapped: list[str]) -> dict[str, str]:
    paths = {rvc_param_name(p): p for p, _ in model.named_parameters()}
    extras: dict[str, str] = {}
    for pat in cfg.extra_trainable:
        hits = [n for n in paths if re.fullmatch(pat, n)]
        if not hits:
            raise LoraError(
                f"extra_trainable pattern {pat!r} matched no parameter; nearby "
                f"names: {_nearby(pat, list(paths))}; fix extra_trainable"
            )
        for n in hits:
            inside = [w for w in wrapped if n.startswith(w + ".")]
            if inside:
                raise LoraError(
                    f"extra_trainable {n!r} belongs to LoRA target {inside[0]!r}, "
                    "whose base stays frozen; drop it from extra_trainable"
                )
            extras[n] = paths[n]
    return extras


def inject_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Wrap every module matched by ``cfg.targets`` in place and freeze all but the adapter.

    Returns:
        Sorted qualified names of the wrapped modules (their names before injection).
    Raises:
        LoraError: a pattern matches nothing, a match is of an unsupported type or a grouped
            conv, or the model already carries an adapter.
    """
    if injection(model) is not None or lora_layers(model):
        raise LoraError("model already has LoRA adapters; call unload_lora(model) first")
    picked = _match_modules(model, cfg)
    matched = sorted(n for n, _ in picked)
    extras = _match_extras(model, cfg, matched)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    wrappers = {}  # built before any replacement, so a refused layer leaves the model as it was
    for name, module in picked:
        wrapper_cls = next(w for base_cls, w in WRAPPERS if isinstance(module, base_cls))
        wrappers[name] = wrapper_cls(
            module,
            cfg.rank_for(name),
            cfg.alpha_for(name),
            dropout=cfg.dropout,
            use_rslora=cfg.use_rslora,
            use_dora=cfg.use_dora,
        )
    for name, wrapper in wrappers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, wrapper)
    for p in model.parameters():
        p.requires_grad_(False)
    setattr(model, _ATTR, Injection(cfg, matched, extras, flags))
    for p in trainable_parameters(model).values():
        p.requires_grad_(True)
    return matched


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Adapter tensors by their file key: ``<module>.lora_A|lora_B|lora_magnitude`` + extras.

    Chosen structurally (wrapper instances + the names recorded by :func:`inject_lora`), so
    building an optimiser from these never touches frozen base weights.
    """
    out: dict[str, nn.Parameter] = {}
    for name, layer in lora_layers(model).items():
        for attr in ("lora_A", "lora_B", "lora_magnitude"):
            p = getattr(layer, attr)
            if p is not None:
                out[f"{name}.{attr}"] = p
    info = injection(model)
    for public, path in info.extras.items() if info else ():
        out[public] = model.get_parameter(path)
    return out


def lora_state_dict(model: nn.Module) -> dict[str, object]:
    """Detached adapter tensors (A, B, DoRA magnitude, extras) keyed like the adapter file."""
    return {k: p.detach() for k, p in trainable_parameters(model).items()}


def merge_lora(model: nn.Module) -> None:
    """Merge every adapter into its base (refused per layer if already merged)."""
    for layer in _layers_or_raise(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora` exactly (refused per layer if not merged)."""
    for layer in _layers_or_raise(model).values():
        layer.unmerge()


@contextlib.contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model computes as its base; previous flags return afterwards."""
    layers = _layers_or_raise(model)
    if any(layer.merged for layer in layers.values()):
        raise LoraError("disable_lora needs unmerged adapters; call unmerge_lora(model) first")
    before = {n: layer.disabled for n, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.disable()
        yield model
    finally:
        for n, layer in layers.items():
            layer.disabled = before[n]


def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace wrappers by their base layers, adapter merged in or not; returns ``model``.

    Afterwards the state dict has exactly the base model's keys and shapes (``weight_g``/
    ``weight_v`` included) and parameters get back the ``requires_grad`` they had before
    injection. Trained extras (e.g. ``emb_g.weight``) keep their trained values.
    """
    layers = _layers_or_raise(model)
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.unload(merge=merge))
    info = injection(model)
    if info is not None:
        for n, p in model.named_parameters():
            p.requires_grad_(info.requires_grad.get(n, p.requires_grad))
        delattr(model, _ATTR)
    return model


def _layers_or_raise(model: nn.Module) -> dict[str, LoraLayer]:
    layers = lora_layers(model)
    if not layers:
        raise LoraError("model has no LoRA adapters; call inject_lora(model, cfg) first")
    return layers
