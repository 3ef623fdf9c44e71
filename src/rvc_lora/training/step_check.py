"""Losses and gradients of one training step without a Trainer: the equality check of issue 17.

A speed or memory lever must not change what the model learns. :func:`compare_steps` runs one
step of a reference module (``reference=True``, the code before the levers) and of a fast one on
the same batch and noise, and reports how far their losses and gradients are apart.

The two modules must start from the same weights. Either build each from the same seed (the
test helpers: ``torch.manual_seed(s)`` before building G and D, then the module, whose LoRA
init draws from the same stream), or ``copy.deepcopy`` the generator and discriminator before
handing them to the first module (a module injects adapters and folds D in place).
"""

from __future__ import annotations

from typing import Any

import torch

from rvc_lora.utils.determinism import seed_step

LOSS_NAMES = ("g", "gen", "fm", "mel", "kl")


def step_gradients(
    module: Any, batch: dict[str, torch.Tensor], seed: int, step: int = 0
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One step's losses and gradients through ``module.step_losses``, without optimiser steps.

    The noise is seeded as ``training_step`` seeds it (``seed_step(seed, step)``). When D
    trains, its loss is backpropagated first and D is frozen for G's backward, as in
    ``training_step``, but D is not stepped: G's gradients are those of the un-stepped D.
    The module is put in train mode (as ``fit`` does); gradients it held before are dropped.

    Args:
        module: a :class:`~rvc_lora.training.module.VoiceConversionModule`.
        batch: a collated batch on the module's device.
        seed: the run seed; ``step``: the global step whose noise is drawn.
    Returns:
        ``(losses, grads)``: ``losses`` by name (``g`` total, ``gen``, ``fm``, ``mel``, ``kl``;
        ``d`` when D trains) as floats; ``grads`` by state-dict-like name (``generator.<name>``
        for the trainable generator tensors, ``discriminator.<name>`` when D trains), detached
        copies (zeros for a tensor the loss does not reach).
    """
    g_params = {f"generator.{k}": p for k, p in module.trainable_generator_parameters().items()}
    d_params = {}
    if module.d_trained:
        d_params = {f"discriminator.{k}": p for k, p in module.discriminator.named_parameters()}
    params = {**g_params, **d_params}
    for p in params.values():
        p.grad = None
    d_flags = {k: p.requires_grad for k, p in d_params.items()}
    grads: dict[str, torch.Tensor] = {}

    def take(named: dict[str, torch.nn.Parameter]) -> None:
        for name, p in named.items():
            grads[name] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            p.grad = None

    def d_step(loss_d: torch.Tensor) -> None:
        loss_d.backward()
        take(d_params)
        for p in d_params.values():  # training_step's toggle_optimizer(opt_g)
            p.requires_grad_(False)

    was_training = module.training
    module.train()
    seed_step(seed, step)
    try:
        out = module.step_losses(batch, d_step)
        out.g.total.backward()
    finally:
        for name, p in d_params.items():
            p.requires_grad_(d_flags[name])
        module.train(was_training)
    take(g_params)
    losses = {k: float(v.detach()) for k, v in zip(LOSS_NAMES, out.g)}
    if out.d is not None:
        losses["d"] = float(out.d.detach())
    return losses, grads


def max_rel_diff(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    """``max |a - b| / max |b|`` (``b`` the reference); 0 when equal, inf if only b is 0."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def compare_results(
    ref: tuple[dict[str, float], dict[str, torch.Tensor]],
    fast: tuple[dict[str, float], dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """Max relative differences between two :func:`step_gradients` results.

    Returns:
        ``{"losses": {name: rel}, "grads": {name: rel}, "worst": rel, "worst_name": name}``
        with ``rel = max |fast - ref| / max |ref|`` per loss and per gradient tensor; the worst
        loss is named ``loss/<name>``.
    Raises:
        ValueError: the results name different losses or tensors.
    """
    for kind, a, b in (("losses", ref[0], fast[0]), ("gradients", ref[1], fast[1])):
        if a.keys() != b.keys():
            raise ValueError(
                f"the modules' {kind} differ in names: only in the reference "
                f"{sorted(a.keys() - b.keys())[:5]}, only in the fast one "
                f"{sorted(b.keys() - a.keys())[:5]}; build both with the same mode and d_policy"
            )
    losses = {k: max_rel_diff(fast[0][k], v) for k, v in ref[0].items()}
    grads = {k: max_rel_diff(fast[1][k], v) for k, v in ref[1].items()}
    everything = {**{f"loss/{k}": v for k, v in losses.items()}, **grads}
    worst_name = max(everything, key=everything.get)
    return {
        "losses": losses,
        "grads": grads,
        "worst": everything[worst_name],
        "worst_name": worst_name,
    }


def compare_steps(
    ref_module: Any, fast_module: Any, batch: dict[str, torch.Tensor], seed: int, step: int = 0
) -> dict[str, Any]:
    """Max relative differences between two modules' losses and gradients of one step.

    Args:
        ref_module: the reference (usually ``reference=True``); its values are the scale.
        fast_module: the module under test, from the same weights (see the module docstring).
        batch, seed, step: as :func:`step_gradients`, the same for both.
    Returns:
        See :func:`compare_results`.
    """
    ref = step_gradients(ref_module, batch, seed, step)
    return compare_results(ref, step_gradients(fast_module, batch, seed, step))
