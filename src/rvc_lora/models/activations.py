"""Leaky ReLU that keeps one copy of an activation for backward instead of two.

``F.leaky_relu`` saves its *input* for backward. In HiFi-GAN blocks the *output* is what the
next conv saves anyway, so saving the output instead lets autograd keep one tensor where it kept
two (about 480 MB less per v2_40k LoRA step at batch 4). With a positive slope,
``sign(out) == sign(in)`` (zeros and signed zeros included), so the gradient computed from the
output is bit-identical: it is the same kernel PyTorch runs for the in-place ``leaky_relu_``
(``leaky_relu_backward(..., self_is_result=True)``).

``reference_activations()`` switches every call back to the plain out-of-place
``F.leaky_relu(x, slope)``, so tests and benchmarks can compare against the pre-change code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

# HiFi-GAN's slope; modules.py re-exports it (this file imports nothing from the models).
LRELU_SLOPE = 0.1

# A module-level switch is enough: it is flipped only by tests and benchmarks, around whole
# forward passes.
_REFERENCE = False


@contextmanager
def reference_activations() -> Iterator[None]:
    """Within the block, ``leaky_relu`` is exactly the pre-change ``F.leaky_relu(x, slope)``."""
    global _REFERENCE
    previous, _REFERENCE = _REFERENCE, True
    try:
        yield
    finally:
        _REFERENCE = previous


def lean_activations_enabled() -> bool:
    """False inside ``reference_activations()``."""
    return not _REFERENCE


class _LeakyReluSaveOutput(torch.autograd.Function):
    """Out-of-place leaky ReLU whose backward reads the output (slope >= 0 only)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, slope: float):
        out = F.leaky_relu(x, slope)
        ctx.save_for_backward(out)
        ctx.slope = slope
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        # The op autograd itself uses for leaky_relu_: grad where out > 0, else grad * slope.
        # It is differentiable, so double backward still works.
        grad_x = torch.ops.aten.leaky_relu_backward(grad, out, ctx.slope, True)
        return grad_x, None


def leaky_relu(x: torch.Tensor, slope: float = 0.01, *, inplace: bool = False) -> torch.Tensor:
    """``F.leaky_relu(x, slope)`` with the same values and gradients, but leaner for backward.

    Args:
        x: any shape and floating dtype, e.g. ``[B, C, T]``.
        slope: negative slope (PyTorch's default 0.01; HiFi-GAN blocks use ``LRELU_SLOPE``).
        inplace: overwrite ``x``. Only for an ``x`` nothing else reads afterwards, in forward or
            backward (a fresh conv output). Autograd then saves the result, which the next conv
            saves anyway. With ``inplace=False`` the result is a new tensor and, while autograd
            records, the output (not ``x``) is kept for backward.

    Returns:
        The activation, shaped like ``x`` (``x`` itself when ``inplace``).
    """
    if _REFERENCE:
        return F.leaky_relu(x, slope)
    if inplace:
        # leaky_relu_ saves its result; autograd refuses (it does not mis-compute) a negative
        # slope there, which no caller uses.
        return F.leaky_relu(x, slope, inplace=True)
    recording = torch.is_grad_enabled() and x.requires_grad
    if not recording or slope < 0 or torch.jit.is_tracing() or torch.jit.is_scripting():
        # Nothing is saved without recording; a negative slope flips signs, so the output does
        # not tell where the input was positive; tracers/exporters get the plain op.
        return F.leaky_relu(x, slope)
    return _LeakyReluSaveOutput.apply(x, slope)
