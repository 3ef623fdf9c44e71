"""Activation checkpointing of the training step's largest activations: memory for time.

The decoder's last two upsampling stages run at the highest time resolution; their resblocks
keep the biggest tensors for backward. Under ``torch.utils.checkpoint`` (non-reentrant) only a
block's inputs are kept and its inside is recomputed during backward: the autograd graph is the
same (the saved tensors are recomputed when backward unpacks them), so for these deterministic
blocks the gradients are bit-identical to a run without checkpointing. The cost is one more
forward of those blocks per step.

The forward is patched on the instance (``module.forward``), not by wrapping the module: the
state-dict names stay as they are, and LoRA wrappers inside the block keep working (the patched
forward calls the class's own, which calls whatever children the block holds at that time).
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_MARK = "_rvc_checkpointed"  # instance attribute set on a patched module

DECODER_STAGES = 2  # the last two upsampling stages of the decoder
D_CONVS = 2  # the first two convs of every member discriminator


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(self).forward
    if not torch.is_grad_enabled():  # validation, inference: nothing is kept anyway
        return forward(self, *args, **kwargs)
    return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)


def checkpoint_module(module: nn.Module) -> None:
    """Run ``module``'s forward under non-reentrant activation checkpointing while grad is on.

    Patches ``module.forward`` on the instance (a bound method, so ``copy.deepcopy`` of a parent
    binds the copy's own forward to the copy). Idempotent.
    """
    if getattr(module, _MARK, False):
        return
    module.forward = types.MethodType(_checkpointed_forward, module)
    setattr(module, _MARK, True)


def is_checkpointed(module: nn.Module) -> bool:
    """True if :func:`checkpoint_module` patched ``module``."""
    return bool(getattr(module, _MARK, False))


def checkpoint_activations(generator: nn.Module, discriminator: nn.Module | None) -> list[str]:
    """Checkpoint the decoder's last two upsampling stages' resblocks and, if given, the first
    two convs of every member discriminator.

    Call after LoRA injection (a wrapper put in place of a patched module would drop the patch).

    Args:
        generator: the synthesizer (``.dec`` with ``resblocks``, ``num_kernels``,
            ``num_upsamples``), or the decoder itself.
        discriminator: the multi-period discriminator (``.discriminators``, each with ``convs``).
    Returns:
        The patched modules' names (``dec.resblocks.3``, ``discriminators.0.convs.1``, ...),
        relative to ``generator`` and ``discriminator``.
    """
    dec, prefix = (generator.dec, "dec.") if hasattr(generator, "dec") else (generator, "")
    names = []
    first = max(dec.num_upsamples - DECODER_STAGES, 0) * dec.num_kernels
    for i in range(first, len(dec.resblocks)):
        checkpoint_module(dec.resblocks[i])
        names.append(f"{prefix}resblocks.{i}")
    if discriminator is not None:
        for k, member in enumerate(discriminator.discriminators):
            for j in range(min(D_CONVS, len(member.convs))):
                checkpoint_module(member.convs[j])
                names.append(f"discriminators.{k}.convs.{j}")
    return names
