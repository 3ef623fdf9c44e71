"""Weight-norm policy in one place.

RVC was trained with the legacy ``torch.nn.utils.weight_norm``, whose state dict holds
``<name>.weight_g`` / ``<name>.weight_v``. We build layers with the maintained
``torch.nn.utils.parametrizations.weight_norm`` (deep-copyable, no stale cached ``.weight``) and
rename its tensors back to RVC's names whenever a state dict is taken. Loading RVC names needs no
help: the parametrization registers a pre-hook that converts ``weight_g``/``weight_v`` on load.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm
from torch.nn.utils.parametrizations import weight_norm as _param_weight_norm
from torch.nn.utils.weight_norm import WeightNorm as _LegacyWeightNorm

_G = "parametrizations.weight.original0"
_V = "parametrizations.weight.original1"


def _rename_to_rvc(module: nn.Module, state_dict: dict[str, Any], prefix: str, _meta: Any) -> None:
    # Runs after the module's children wrote their keys, so both originals are present here.
    for src, dst in ((_G, "weight_g"), (_V, "weight_v")):
        key = prefix + src
        if key in state_dict:
            state_dict[prefix + dst] = state_dict.pop(key)


def apply_weight_norm(module: nn.Module) -> nn.Module:
    """Weight-normalise ``module.weight`` (dim 0) and keep RVC's ``weight_g``/``weight_v`` keys."""
    _param_weight_norm(module, name="weight", dim=0)
    module.register_state_dict_post_hook(_rename_to_rvc)
    return module


def has_weight_norm(module: nn.Module) -> bool:
    """True if ``module.weight`` is parametrized by weight norm (either flavour)."""
    legacy = hasattr(module, "weight_g") and hasattr(module, "weight_v")
    return legacy or parametrize.is_parametrized(module, "weight")


@torch.no_grad()
def fold_weight_norm(module: nn.Module) -> list[str]:
    """Replace weight norm by the plain weight it yields, in every submodule of a FROZEN module.

    Weight norm recomputes ``w = g * v / ||v||`` at every call. For a module whose ``g`` and
    ``v`` never change (RVC's frozen discriminator) that is wasted time, and autograd keeps each
    call's fresh ``w`` for backward: one weight copy per call (285 MB per v2 LoRA step). Folding
    computes ``w`` once with ``torch._weight_norm(v, g, dim)``, the op both weight-norm flavours
    run, so every output is bit-identical. The folded ``weight`` is a parameter with
    ``requires_grad=False``.

    Only for a module that is not trained and not saved afterwards: its state dict then holds
    ``<name>.weight`` in place of RVC's ``weight_g``/``weight_v`` (the training module never
    saves a frozen discriminator). Handles the parametrized flavour (``apply_weight_norm``) and
    the legacy ``torch.nn.utils.weight_norm`` hook. Idempotent: a second call folds nothing.

    Returns:
        Qualified names of the folded submodules (``""`` for ``module`` itself).
    """
    folded = []
    for name, sub in list(module.named_modules()):
        weight = None
        if parametrize.is_parametrized(sub, "weight"):
            plist = sub.parametrizations.weight
            # Only weight norm alone on the module; another parametrization would be lost.
            alone = len(sub.parametrizations) == 1 and len(plist) == 1
            if alone and isinstance(plist[0], _WeightNorm):
                weight = torch._weight_norm(plist.original1, plist.original0, plist[0].dim)
                # Not parametrize.remove_parametrizations: it deletes the `weight` property from
                # the injected class, which deep copies share, so every copy would break.
                del sub._modules["parametrizations"]
                sub.__class__ = sub.__class__.__bases__[0]
        else:
            for key, hook in list(sub._forward_pre_hooks.items()):
                if isinstance(hook, _LegacyWeightNorm) and hook.name == "weight":
                    g, v = sub.weight_g, sub.weight_v
                    weight = torch._weight_norm(v, g, hook.dim)
                    del sub._forward_pre_hooks[key]
                    del sub._parameters["weight_g"], sub._parameters["weight_v"]
                    delattr(sub, "weight")  # the plain attribute the hook kept refreshing
        if weight is not None:
            sub.weight = nn.Parameter(weight, requires_grad=False)
            folded.append(name)
    return folded


def wn_conv1d(*args: Any, **kwargs: Any) -> nn.Conv1d:
    """``nn.Conv1d`` with RVC-compatible weight norm."""
    return apply_weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args: Any, **kwargs: Any) -> nn.ConvTranspose1d:
    """``nn.ConvTranspose1d`` with RVC-compatible weight norm (g over the input-channel dim 0)."""
    return apply_weight_norm(nn.ConvTranspose1d(*args, **kwargs))


def wn_conv2d(*args: Any, **kwargs: Any) -> nn.Conv2d:
    """``nn.Conv2d`` with RVC-compatible weight norm."""
    return apply_weight_norm(nn.Conv2d(*args, **kwargs))


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of a stride-1 convolution with odd kernel: (k*d - d) / 2."""
    return (kernel_size * dilation - dilation) // 2


@torch.no_grad()
def init_normal(module: nn.Module, std: float = 0.01) -> None:
    """HiFi-GAN's init, applied to the direction ``v`` so that it survives weight norm.

    RVC applies it to the derived ``.weight`` after weight norm is attached, where it is lost on
    the next forward (RVC_FACTS.md §1.4); we initialise what really trains.
    """
    if parametrize.is_parametrized(module, "weight"):
        module.parametrizations.weight.original1.normal_(0.0, std)
        v = module.parametrizations.weight.original1
        dims = tuple(range(1, v.dim()))
        module.parametrizations.weight.original0.copy_(v.norm(dim=dims, keepdim=True))
    elif isinstance(getattr(module, "weight", None), torch.Tensor):
        module.weight.normal_(0.0, std)
