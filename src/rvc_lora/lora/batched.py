"""Per-row adapters: every row of a batch computes with its own LoRA adapter (S-LoRA/Punica style).

For an adapted module the output of row i is ``base(x_i) + s_i * B_i(A_i(x_i))``: the base
runs once over the whole batch, and the low-rank branch runs batched with each row's A/B
gathered into one tensor (``bmm`` for Linear, grouped convolutions for Conv1d and
ConvTranspose1d with the base layer's own stride/padding/dilation). Rows without an adapter on a
module get zero A/B; ranks that differ are zero-padded to the largest. Both are exact: the
padding adds products with zero.

The branch is the activation form of the weight delta the wrappers in
:mod:`rvc_lora.lora.layers` merge (``W + s * reshape(B @ A)``); convolution is linear in the
weight, so the two are equal in exact arithmetic, and weight norm does not enter (it makes
``W``, which the base layer computes itself). DoRA rescales each output channel by a norm of
the merged weight, which no per-row branch reproduces cheaply: DoRA adapters are refused.

The branches attach as forward hooks on the adapted modules for the duration of a
``with row_adapters(...)`` block and leave nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.lora.config import LoraError


@dataclass(frozen=True)
class RowAdapter:
    """One row's adapter on one module: A, B as an adapter file stores them, and the scale."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    scale: float


def _base_of(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)  # a disabled wrapper computes its base


def _stack(rows: Sequence[RowAdapter | None], a_shape, b_shape, ref: torch.Tensor):
    """``A [N, r, a_shape]`` and ``s * B [N, b_shape, r]``, zero where a row has none."""
    rank = max(r.lora_A.shape[0] for r in rows if r is not None)
    n = len(rows)
    a = ref.new_zeros(n, rank, a_shape)
    b = ref.new_zeros(n, b_shape, rank)
    for i, row in enumerate(rows):
        if row is None:
            continue
        r = row.lora_A.shape[0]
        a[i, :r] = row.lora_A.to(ref)
        b[i, :, :r] = row.lora_B.to(ref) * row.scale  # the scale rides on B: one pass less
    return a, b


def _branch_fn(module: nn.Module, rows: Sequence[RowAdapter | None], ref: torch.Tensor):
    """``f(x, out)``: add every row's branch of ``module`` to its output ``out``, in place (the
    output is fresh and autograd is off: no extra copy of an activation-sized tensor)."""
    base = _base_of(module)
    n = len(rows)
    if isinstance(base, nn.Linear):
        a, b = _stack(rows, base.in_features, base.out_features, ref)
        b_t = b.transpose(1, 2)

        def linear(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            h = torch.bmm(x.reshape(n, -1, x.shape[-1]), a.transpose(1, 2))  # [N, L, r]
            out.view(n, -1, out.shape[-1]).baddbmm_(h, b_t)
            return out

        return linear
    if isinstance(base, nn.Conv1d):
        in_c, k, out_c = base.in_channels, base.kernel_size[0], base.out_channels
        a, b = _stack(rows, in_c * k, out_c, ref)
        rank = a.shape[1]
        weight = a.reshape(n * rank, in_c, k)

        def conv(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            h = F.conv1d(x.reshape(1, n * in_c, -1), weight, None, base.stride, base.padding,
                         base.dilation, groups=n)  # fmt: skip
            return out.baddbmm_(b, h.view(n, rank, -1))  # [N, out, T'] += B @ h

        return conv
    if isinstance(base, nn.ConvTranspose1d):
        in_c, out_c, k = base.in_channels, base.out_channels, base.kernel_size[0]
        a, b = _stack(rows, in_c, out_c * k, ref)
        rank = a.shape[1]
        # B^T of each row viewed as a transposed-conv weight [r, out, k], rows stacked as groups.
        weight = b.transpose(1, 2).reshape(n * rank, out_c, k)

        def conv_t(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            h = torch.bmm(a, x)  # [N, r, T]
            y = F.conv_transpose1d(
                h.reshape(1, n * rank, -1), weight, None, base.stride, base.padding,
                base.output_padding, groups=n, dilation=base.dilation,
            )  # fmt: skip
            return out.add_(y.view(n, out_c, -1))

        return conv_t
    raise LoraError(f"per-row adapters support Linear, Conv1d, ConvTranspose1d; got {type(base)}")


@contextlib.contextmanager
def row_adapters(
    model: nn.Module,
    rows: Mapping[str, Sequence[RowAdapter | None]],
    embeddings: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> Iterator[None]:
    """Inside the block, ``model``'s modules compute per row.

    Args:
        model: a model whose named modules compute as the base (plain, or LoRA wrappers
            disabled).
        rows: module name -> one :class:`RowAdapter` or None per batch row; every list as long
            as the batch the model is then called with.
        embeddings: ``nn.Embedding`` module name -> one table per row ``[num, dim]``: row i
            looks its ids up in its own table (an adapter's trained speaker embedding).
    """
    handles = []
    try:
        for name, per_row in rows.items():
            if all(r is None for r in per_row):
                continue
            module = model.get_submodule(name)
            ref = next(_base_of(module).parameters())
            branch = _branch_fn(module, per_row, ref.detach())
            n_rows = len(per_row)

            def hook(_m, args, out, branch=branch, n=n_rows):
                x = args[0]
                if x.shape[0] != n:
                    raise LoraError(
                        f"per-row adapters were set for {n} rows, got a batch of {x.shape[0]}"
                    )
                return branch(x.to(out.dtype), out)

            handles.append(module.register_forward_hook(hook))
        for name, tables in (embeddings or {}).items():
            stacked = torch.stack(list(tables))  # [N, num, dim]

            def lookup(_m, args, _out, stacked=stacked):
                ids = args[0]  # [N]
                return stacked[torch.arange(ids.shape[0], device=ids.device), ids]

            handles.append(model.get_submodule(name).register_forward_hook(lookup))
        yield
    finally:
        for h in handles:
            h.remove()
