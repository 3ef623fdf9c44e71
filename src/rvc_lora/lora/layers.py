"""LoRA wrappers for ``Linear``, ``Conv1d`` and ``ConvTranspose1d``, exact under weight norm.

Each wrapper owns the original module as ``base_layer`` and adds ``lora_A`` / ``lora_B``
(+ ``lora_magnitude`` for DoRA). The base weight is always recomputed from its own parameters:
plain ``weight``, legacy weight norm (``weight_g``/``weight_v`` + a pre-hook that caches
``.weight``; the cache goes stale when the wrapper bypasses ``base_layer.forward``, so it is never
read), or parametrized weight norm (``parametrizations.weight.original0/1``). Both weight-norm
flavours compute ``torch._weight_norm(v, g, dim)``; calling the same op keeps B=0 bit-exact.

Conv wrappers use the weight-delta form ``W + scale * reshape(B @ A)`` and the base layer's own
stride/padding/dilation/output_padding, so geometry is exact by construction.

While g and v are frozen (LoRA training, conversion) ``base_weight()`` is cached per wrapper: the
same op on the same tensors gives the same bits, so the cache changes speed only. It is keyed on
the tensors' identity, storage pointer, ``_version`` counter, dtype, device and the autocast state,
so ``copy_``/``load_state_dict``/merge/``.to()`` invalidate it; ``reference_base_weights()`` turns
it off (the pre-cache path, for tests and benchmarks).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm as _LegacyWeightNorm

from rvc_lora.lora.config import LoraError

_Shapes = tuple[tuple[int, int], tuple[int, int]]  # (A shape, B shape)

_REFERENCE = False  # True inside reference_base_weights(): no cache anywhere


@contextlib.contextmanager
def reference_base_weights() -> Iterator[None]:
    """Recompute every weight-normed base weight at each use, as before the cache existed.

    For tests and benchmarks that compare the cached path against the reference one.
    """
    global _REFERENCE
    previous, _REFERENCE = _REFERENCE, True
    try:
        yield
    finally:
        _REFERENCE = previous


@dataclass(frozen=True)
class _BaseWeightCache:
    """A detached ``_weight_norm(v, g, dim)`` and what it was computed from."""

    sources: tuple[torch.Tensor, torch.Tensor]  # the (g, v) objects, compared by identity
    # Detached views of (g, v) at compute time: they keep the old storages alive, so new data
    # assigned via `.data =` can never reuse the cached pointer with the same version count.
    pinned: tuple[torch.Tensor, torch.Tensor]
    key: tuple[object, ...]
    weight: torch.Tensor
    weight_version: int  # an in-place edit of the returned tensor invalidates it too


def _cache_key(g: torch.Tensor, v: torch.Tensor) -> tuple[object, ...] | None:
    """What the frozen weight depends on besides values, or None where caching is unsafe."""
    if g.requires_grad or v.requires_grad:
        return None  # the graph must flow into g / v (full fine-tuning through a wrapper)
    if g.is_inference() or v.is_inference() or v.device.type == "meta":
        return None  # inference tensors have no version counter to detect in-place writes
    if torch.compiler.is_compiling():
        return None  # fake tensors under tracing: let the compiled graph recompute
    dev = v.device.type
    amp = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
    return (
        *((t.data_ptr(), t._version, t.dtype, t.device) for t in (g, v)),
        amp,
    )


def weight_norm_kind(base: nn.Module) -> tuple[str, int]:
    """``("plain", 0)``, ``("legacy", dim)`` or ``("param", dim)`` for ``base.weight``."""
    if parametrize.is_parametrized(base, "weight"):
        plist = base.parametrizations.weight
        if len(plist) != 1 or type(plist[0]).__name__ != "_WeightNorm":
            kinds = [type(p).__name__ for p in plist]
            raise LoraError(
                f"{type(base).__name__}.weight is parametrized by {kinds}; "
                "LoRA supports plain weights or weight norm only"
            )
        return "param", int(plist[0].dim)
    for hook in base._forward_pre_hooks.values():
        if isinstance(hook, _LegacyWeightNorm) and hook.name == "weight":
            return "legacy", int(hook.dim)
    if not isinstance(base._parameters.get("weight"), nn.Parameter):
        raise LoraError(f"{type(base).__name__} has no weight parameter to adapt")
    return "plain", 0


class LoraLayer(nn.Module):
    """Shared bookkeeping; subclasses define shapes, the delta reshape and the op.

    Args:
        base: module to adapt; kept as ``base_layer`` with its parameter names unchanged.
        rank: r. alpha: scale numerator. dropout: on the LoRA branch input, training only.
        use_rslora: scale alpha/sqrt(r) instead of alpha/r.
        use_dora: trainable magnitude per weight-norm channel (dim 0 of the weight when plain).
    """

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        *,
        dropout: float = 0.0,
        use_rslora: bool = False,
        use_dora: bool = False,
    ) -> None:
        super().__init__()
        self._base_cache: _BaseWeightCache | None = None
        self._check_base(base)
        if use_dora and dropout > 0:
            raise LoraError("dropout must be 0 with use_dora=true; set dropout=0")
        self.base_layer = base
        self.wn_kind, self.wn_dim = weight_norm_kind(base)
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / (math.sqrt(self.rank) if use_rslora else self.rank)
        self.dropout, self.use_dora = float(dropout), bool(use_dora)
        self.merged, self.disabled = False, False
        w = self._fresh_base_weight().detach()  # no cache entry for a layer never run
        a_shape, b_shape = self._lora_shapes(tuple(w.shape))
        self.lora_A = nn.Parameter(torch.empty(a_shape, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(b_shape, dtype=w.dtype, device=w.device))
        if use_dora:
            n = self._decomposition()[1].numel()
            self.lora_magnitude = nn.Parameter(torch.empty(n, dtype=w.dtype, device=w.device))
        else:
            self.register_parameter("lora_magnitude", None)
        self.reset_lora_parameters()

    # --- subclass interface -------------------------------------------------------------
    def _check_base(self, base: nn.Module) -> None:
        pass

    def _lora_shapes(self, w_shape: tuple[int, ...]) -> _Shapes:
        raise NotImplementedError

    def _delta_matrix(self) -> torch.Tensor:
        """Unscaled ``B @ A`` reshaped to the base weight's shape."""
        raise NotImplementedError

    # --- weights --------------------------------------------------------------------------
    def base_params(self) -> dict[str, nn.Parameter]:
        """The tensors that define the base weight: ``{"weight"}`` or ``{"g", "v"}``."""
        b = self.base_layer
        if self.wn_kind == "legacy":
            return {"g": b.weight_g, "v": b.weight_v}
        if self.wn_kind == "param":
            return {
                "g": b.parametrizations.weight.original0,
                "v": b.parametrizations.weight.original1,
            }
        return {"weight": b.weight}

    def _decomposition(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(v, g, dim)`` with ``W = g * v / ||v||``; a plain W is its own v with g = ||W||."""
        p = self.base_params()
        if "weight" in p:
            w = p["weight"]
            return w, torch.norm_except_dim(w, 2, 0), 0
        return p["v"], p["g"], self.wn_dim

    def _fresh_base_weight(self) -> torch.Tensor:
        p = self.base_params()
        if "weight" in p:
            return p["weight"]
        return torch._weight_norm(p["v"], p["g"], self.wn_dim)  # the op both WN flavours run

    def _base_shape(self) -> torch.Size:
        """Shape of the base weight (v's shape under weight norm) without computing it."""
        p = self.base_params()
        return p["weight"].shape if "weight" in p else p["v"].shape

    def base_weight(self) -> torch.Tensor:
        """Base weight from its parameters (never the legacy cached ``.weight``).

        Under weight norm with g and v frozen the result is cached and returned detached: the
        same tensor object until g, v, their storage, dtype, device or the autocast state
        change. Write into g / v only through autograd-visible ops (``copy_``, ``mul_``, ...);
        a write through ``.data`` bypasses the version counter: call
        :meth:`clear_base_weight_cache` after one.
        """
        p = self.base_params()
        if "weight" in p or _REFERENCE:
            return self._fresh_base_weight()
        g, v = p["g"], p["v"]
        key = _cache_key(g, v)
        if key is None:
            return self._fresh_base_weight()
        c = self._base_cache
        if (
            c is not None
            and c.sources[0] is g
            and c.sources[1] is v
            and c.key == key
            and c.weight._version == c.weight_version
        ):
            return c.weight
        # inference_mode(False): an entry made during conversion/validation must stay usable
        # in a later training step (inference tensors cannot be saved for backward).
        with torch.inference_mode(False), torch.no_grad():
            w = torch._weight_norm(v, g, self.wn_dim)
        self._base_cache = _BaseWeightCache((g, v), (g.detach(), v.detach()), key, w, w._version)
        return w

    def clear_base_weight_cache(self) -> None:
        """Drop the cached base weight (needed only after writing g / v through ``.data``)."""
        self._base_cache = None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> LoraLayer:
        # .to()/.half()/.cuda() replace g and v: the key would miss anyway, but dropping the
        # entry now frees the old device's copies instead of holding them to the next forward.
        self._base_cache = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, object]:
        # deepcopy / pickle carry no cache: a copy recomputes from its own g and v.
        state = super().__getstate__()
        state["_base_cache"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("_base_cache", None)  # wrappers pickled before the cache existed
        super().__setstate__(state)

    def delta_weight(self) -> torch.Tensor:
        """``scale * reshape(B @ A)``, shaped like the base weight."""
        return self.scale * self._delta_matrix()

    def _dora_direction(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        # DoRA as weight norm with a trainable g: the delta goes into v, rescaled per channel by
        # c = ||v|| / g so that v + c*dW = c * (W + dW): the normalised direction is exactly
        # DoRA's (W + dW) / ||W + dW||, and at dW = 0 we recompute the base's own
        # _weight_norm(v, g) bit for bit. Merging then writes (v + c*dW, m) as the new (v, g).
        v, g, dim = self._decomposition()
        m = self.lora_magnitude.view(g.shape)
        if self.wn_kind == "plain":
            return v + self.delta_weight(), m, dim  # v is W itself: c = 1, even where W = 0
        # Where g = 0, W = 0 and no finite c exists; DoRA's direction there is dW's own.
        dead = g == 0
        c = torch.norm_except_dim(v, 2, dim) / torch.where(dead, 1.0, g)
        dw = self.delta_weight()
        return torch.where(dead, dw, v + c * dw), m, dim

    def effective_weight(self) -> torch.Tensor:
        """Weight the adapted layer computes with (before any merge)."""
        if self.use_dora:
            v_new, m, dim = self._dora_direction()
            norm = torch.norm_except_dim(v_new, 2, dim)
            # A zero channel (dead W and dW = 0) has no direction: it stays zero. The guard is
            # `where(norm == 0, 1, norm)` rather than a clamp at some eps (as peft does): it
            # changes nothing for any non-zero norm in any dtype (an eps of 1e-12 underflows
            # in fp16, a larger one alters small channels), and 0 * (m / 1) is 0 for any m.
            # Built with `where`, the unguarded branch gets zero gradient, so backward is finite.
            zero = norm == 0
            if self.wn_kind == "plain":
                # Same norm op as the magnitude's init, so m / ||W|| == 1 exactly at B = 0.
                return v_new * (m / torch.where(zero, 1.0, norm))
            # The base's own op (exact at B = 0), fed a harmless v where it would divide 0 by 0.
            w = torch._weight_norm(torch.where(zero, 1.0, v_new), m, dim)
            return torch.where(zero, 0.0, w)
        return self.base_weight() + self.delta_weight()

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        """A: kaiming-uniform(a=sqrt 5) like ``nn.Linear``; B: zeros (so the delta starts at 0)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        if self.lora_magnitude is not None:
            self.lora_magnitude.copy_(self._decomposition()[1].reshape(-1))

    # --- merge / unmerge / disable ------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base's own parameters (names and shapes unchanged).

        The pre-merge tensors are kept as non-persistent buffers so that :meth:`unmerge` is
        bit-exact: re-deriving g and v is not invertible by subtraction.
        """
        if self.merged:
            raise LoraError("adapter is already merged; call unmerge() first")
        self._base_cache = None  # the write below bumps versions too; this also frees it
        params = self.base_params()
        for role, p in params.items():
            self.register_buffer(f"_orig_{role}", p.detach().clone(), persistent=False)
        if self.use_dora and "g" in params:
            v_new, m, dim = self._dora_direction()
            self._write_weight_norm(v_new, m, torch.norm_except_dim(v_new, 2, dim) == 0)
        elif "g" in params:
            w_new = self.effective_weight()
            g_new = torch.norm_except_dim(w_new, 2, self.wn_dim)
            self._write_weight_norm(w_new, g_new, g_new == 0)
        else:
            params["weight"].copy_(self.effective_weight())
        self._refresh_legacy_cache()
        self.merged = True

    def _write_weight_norm(self, v: torch.Tensor, g: torch.Tensor, zero: torch.Tensor) -> None:
        # A zero channel written as (v=0, g=0) would make the base's weight norm 0/0 = NaN;
        # keeping the old v with g = 0 gives the same zero weight.
        params = self.base_params()
        params["v"].copy_(torch.where(zero, params["v"], v))
        params["g"].copy_(torch.where(zero, 0.0, g))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the exact pre-merge base parameters."""
        if not self.merged:
            raise LoraError("adapter is not merged; nothing to unmerge")
        self._base_cache = None
        for role, p in self.base_params().items():
            p.copy_(getattr(self, f"_orig_{role}"))
            delattr(self, f"_orig_{role}")
        self._refresh_legacy_cache()
        self.merged = False

    def _refresh_legacy_cache(self) -> None:
        # Anyone reading the legacy `.weight` attribute before the next forward sees new values.
        # A fresh tensor, not the cache's: a caller editing `.weight` in place must not reach it.
        if self.wn_kind == "legacy":
            self.base_layer.weight = self._fresh_base_weight().detach()

    def disable(self) -> None:
        """Compute as the base layer until :meth:`enable`."""
        if self.merged:
            raise LoraError("cannot disable a merged adapter; call unmerge() first")
        self.disabled = True

    def enable(self) -> None:
        self.disabled = False

    def unload(self, merge: bool = True) -> nn.Module:
        """Return the base layer, with the adapter merged in (``merge=True``) or not."""
        if merge and not self.merged:
            self.merge()
        elif not merge and self.merged:
            self.unmerge()
        return self.base_layer

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, training=True) if self._dropout_active() else x

    def _dropout_active(self) -> bool:
        return self.training and self.dropout > 0

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, alpha={self.alpha:g}, scale={self.scale:g}, "
            f"dropout={self.dropout:g}, dora={self.use_dora}, weight_norm={self.wn_kind}"
        )


def _check_conv(base: nn.Module) -> None:
    if base.groups != 1:
        raise LoraError(
            f"{type(base).__name__} with groups={base.groups} is not supported "
            "(LoRA needs groups=1); exclude this module"
        )
    if base.padding_mode != "zeros":
        raise LoraError(
            f"{type(base).__name__} with padding_mode={base.padding_mode!r} is not "
            "supported (only 'zeros'); exclude this module"
        )


class LoraLinear(LoraLayer):
    """LoRA on ``nn.Linear``: weight [out, in], A [r, in], B [out, r]."""

    def _lora_shapes(self, w_shape: tuple[int, ...]) -> _Shapes:
        out_f, in_f = w_shape
        return (self.rank, in_f), (out_f, self.rank)

    def _delta_matrix(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A  # [out, in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[..., in]`` -> ``[..., out]``."""
        if self.disabled or self.merged:
            return self.base_layer(x)
        if self.use_dora:
            return F.linear(x, self.effective_weight(), self.base_layer.bias)
        # Unmerged: x A^T B^T is cheaper than forming B @ A, and dropout sits on its input.
        # F.linear with base_weight() is nn.Linear's own call on the same weight, but cached.
        branch = F.linear(F.linear(self._drop(x), self.lora_A), self.lora_B)
        return F.linear(x, self.base_weight(), self.base_layer.bias) + self.scale * branch


class LoraConv1d(LoraLayer):
    """LoRA on ``nn.Conv1d`` (any kernel/stride/padding/dilation, groups=1).

    Weight [out, in, k]; A [r, in*k], B [out, r]; delta = (B @ A).view(out, in, k).
    Dropout (training only) needs the branch input, which the weight-delta form never sees, so
    then the branch runs factorised with the same geometry: conv(drop(x), A as [r, in, k]) and a
    1x1 conv with B. That costs a second conv while training; eval uses one conv.
    """

    _check_base = staticmethod(_check_conv)

    def _lora_shapes(self, w_shape: tuple[int, ...]) -> _Shapes:
        out_c, in_c, k = w_shape
        return (self.rank, in_c * k), (out_c, self.rank)

    def _delta_matrix(self) -> torch.Tensor:
        out_c, in_c, k = self._base_shape()
        return (self.lora_B @ self.lora_A).view(out_c, in_c, k)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        m = self.base_layer
        return F.conv1d(x, w, b, m.stride, m.padding, m.dilation, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, in, T]`` -> ``[B, out, T']``."""
        if self.disabled or self.merged:
            return self.base_layer(x)
        bias = self.base_layer.bias
        if self._dropout_active():
            in_c, k = self.base_layer.in_channels, self.base_layer.kernel_size[0]
            h = self._conv(self._drop(x), self.lora_A.view(self.rank, in_c, k), None)  # [B, r, T']
            branch = F.conv1d(h, self.lora_B.unsqueeze(-1))  # [B, out, T']
            return self._conv(x, self.base_weight(), bias) + self.scale * branch
        return self._conv(x, self.effective_weight(), bias)


class LoraConvTranspose1d(LoraLayer):
    """LoRA on ``nn.ConvTranspose1d`` (stride, padding, output_padding, dilation; groups=1).

    Weight is [in, out, k] (input channels first), so A faces the input: A [r, in],
    B [out*k, r], delta = (A^T @ B^T).view(in, out, k). The factorised (dropout) branch is a 1x1
    conv with A, then the base's transposed conv with B^T viewed as [r, out, k].
    """

    _check_base = staticmethod(_check_conv)

    def _lora_shapes(self, w_shape: tuple[int, ...]) -> _Shapes:
        in_c, out_c, k = w_shape
        return (self.rank, in_c), (out_c * k, self.rank)

    def _delta_matrix(self) -> torch.Tensor:
        in_c, out_c, k = self._base_shape()
        return (self.lora_A.t() @ self.lora_B.t()).view(in_c, out_c, k)

    def _conv(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        output_padding: tuple[int, ...],
    ) -> torch.Tensor:
        m = self.base_layer
        return F.conv_transpose1d(x, w, b, m.stride, m.padding, output_padding, 1, m.dilation)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """x ``[B, in, T]`` -> ``[B, out, (T-1)*stride - 2*pad + dil*(k-1) + out_pad + 1]``."""
        if self.disabled or self.merged:
            return self.base_layer(x, output_size)
        m = self.base_layer
        out_pad = (
            m.output_padding
            if output_size is None
            else m._output_padding(
                x, output_size, m.stride, m.padding, m.kernel_size, 1, m.dilation
            )
        )
        if self._dropout_active():
            h = F.conv1d(self._drop(x), self.lora_A.unsqueeze(-1))  # [B, r, T]
            out_c, k = m.out_channels, m.kernel_size[0]
            w_b = self.lora_B.t().reshape(self.rank, out_c, k)  # [r, out, k]
            branch = self._conv(h, w_b, None, out_pad)
            return self._conv(x, self.base_weight(), m.bias, out_pad) + self.scale * branch
        return self._conv(x, self.effective_weight(), m.bias, out_pad)
