"""Inference-only fast path of the HiFi-GAN / NSF decoder (:class:`Generator`).

Same maths as ``Generator.forward``, arranged for speed on CPU:

- Activations are 4-D ``[B, C, 1, T]`` in ``torch.channels_last``: every ``Conv1d`` runs as
  ``conv2d`` with ``weight.unsqueeze(2)`` (``ConvTranspose1d`` as ``conv_transpose2d``) with the
  same stride/padding/dilation on the last dim. oneDNN computes NHWC natively; NCW input is
  reordered at every call (a 3-D tensor with NWC strides does not get the native path).
- On CPU fp32, conv + leaky_relu and conv + residual add run as one oneDNN call each (PyTorch's
  own fused ops, the ones inductor emits); the add writes into the residual in place where that
  tensor is not shared.
- ``sum(blocks) / num_kernels`` loses its division: leaky_relu is positively homogeneous and
  the next op is a conv, so ``1 / num_kernels`` is folded into the next ``ups`` weight or
  ``conv_post``'s (rounding differs in the last bits only).
- Effective weights (weight norm computed, an unmerged LoRA adapter added) are prepared once per
  conv and cached, keyed on the identity, storage and ``_version`` of every parameter they come
  from, so ``load_state_dict``, merge/unmerge, an adapter switch or ``.to()`` take effect.
- ``crop`` decodes only the kept frames plus the receptive field
  (:func:`decoder_receptive_field`); the NSF excitation is still computed at full length (its
  phase accumulates from the first frame and its noise is drawn for every sample) and sliced.

Everything that knows the Generator/ResBlock layout for this path lives in this file.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.models.generator import Generator
from rvc_lora.models.modules import LRELU_SLOPE, ResBlock1, ResBlock2

_CL = torch.channels_last
POST_SLOPE = 0.01  # conv_post's activation uses leaky_relu's default slope (RVC_FACTS pitfall 12)


# -- weights -----------------------------------------------------------------------------------
def _is_lora(m: nn.Module) -> bool:
    # Duck-typed (models may not import lora): a wrapper owns `base_layer` and computes its
    # weight with `effective_weight()`.
    return hasattr(m, "base_layer") and hasattr(m, "effective_weight")


def _conv_of(m: nn.Module) -> nn.Module:
    """The ``nn.Conv1d`` / ``nn.ConvTranspose1d`` that holds the geometry."""
    return m.base_layer if _is_lora(m) else m


def _plain_weight(m: nn.Module) -> torch.Tensor:
    """Weight of a conv: plain, parametrized weight norm, or legacy weight norm (recomputed:
    the legacy hook's cached ``.weight`` is stale until the module's own forward runs)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in m._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            return torch._weight_norm(m.weight_v, m.weight_g, hook.dim)
    return m.weight  # the parametrization computes it fresh


def _effective_weight(m: nn.Module) -> torch.Tensor:
    """Weight ``m`` computes with: a LoRA wrapper's W + delta while active, else the base's."""
    if _is_lora(m):
        if m.merged or m.disabled:
            return _plain_weight(m.base_layer)
        return m.effective_weight()
    return _plain_weight(m)


@dataclass(frozen=True)
class _Entry:
    """Prepared 4-D channels-last weight of one conv and what it was computed from."""

    sources: tuple[torch.Tensor, ...]  # held: identity compares can never hit a reused id
    # Detached views of the sources' storages at compute time. Module.to()/.half() swap a
    # parameter's `.data` without bumping its version; while the old storage lives, the new one
    # cannot reuse its address, so the key always changes.
    pinned: tuple[torch.Tensor, ...]
    key: tuple[object, ...]
    weight: torch.Tensor  # [out, in, 1, k] (transposed: [in, out, 1, k]), channels_last
    bias: torch.Tensor | None


# Per conv module; weak, so a replaced module (new adapter structure) frees its entry.
_CACHE: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def _key(m: nn.Module, sources: Sequence[torch.Tensor], scale: float) -> tuple[object, ...] | None:
    if any(t.is_inference() for t in sources):
        return None  # no version counter: in-place writes would go unseen
    flags = (m.merged, m.disabled, m.scale, m.use_dora) if _is_lora(m) else ()
    state = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
    return (*flags, scale, state)


def _prepared(m: nn.Module, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight [., ., 1, k] channels_last, bias)`` of conv ``m``; weight times ``scale``."""
    sources = tuple(m.parameters())
    key = _key(m, sources, scale)
    entry = _CACHE.get(m)
    if (
        key is not None
        and entry is not None
        and entry.key == key
        and all(a is b for a, b in zip(entry.sources, sources, strict=True))
    ):
        return entry.weight, entry.bias
    # Outside inference mode: an entry made during a conversion stays usable in a later
    # no_grad call (inference tensors have no version counter).
    with torch.inference_mode(False), torch.no_grad():
        w = _effective_weight(m).detach()
        if scale != 1.0:
            w = w * scale
        w = w.unsqueeze(2).contiguous(memory_format=_CL)
        bias = _conv_of(m).bias
        bias = None if bias is None else bias.detach()
    if key is not None:
        _CACHE[m] = _Entry(sources, tuple(t.detach() for t in sources), key, w, bias)
    return w, bias


# -- fused oneDNN ops --------------------------------------------------------------------------
@functools.cache
def _fused_available() -> bool:
    """PyTorch's internal oneDNN conv+pointwise ops exist and agree with conv2d (probed once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        x = torch.randn(1, 4, 1, 9).contiguous(memory_format=_CL)
        w = torch.randn(4, 4, 1, 3).contiguous(memory_format=_CL)
        b = torch.randn(4)
        ref = F.conv2d(x, w, b, 1, (0, 1))
        y = ops._convolution_pointwise(x, w, b, [0, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.1], "")
        other = x.clone()
        ops._convolution_pointwise_.binary(
            other, x, w, b, [0, 1], [1, 1], [1, 1], 1, "add", None, None, [], ""
        )
        return bool(
            torch.allclose(y, F.leaky_relu(ref, 0.1), atol=1e-5)
            and torch.allclose(other, x + ref, atol=1e-5)
        )
    except (AttributeError, RuntimeError):
        return False


class _Runner:
    """Runs the decoder's convs on ``[B, C, 1, T]`` channels-last tensors."""

    def __init__(self, x: torch.Tensor) -> None:
        self.fused = x.device.type == "cpu" and x.dtype == torch.float32 and _fused_available()

    @staticmethod
    def _geometry(c: nn.Module) -> tuple[list[int], list[int], list[int], int]:
        return [0, c.padding[0]], [1, c.stride[0]], [1, c.dilation[0]], c.groups

    def conv(
        self, m: nn.Module, x: torch.Tensor, slope: float | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """``m(x)`` (then ``leaky_relu(., slope)`` if given) on x ``[B, C, 1, T]``."""
        w, b = _prepared(m, scale)
        pad, stride, dil, groups = self._geometry(_conv_of(m))
        if self.fused:
            if slope is None:
                attr, scalars = "none", []
            else:
                attr, scalars = "leaky_relu", [slope]
            return torch.ops.mkldnn._convolution_pointwise(
                x, w, b, pad, stride, dil, groups, attr, scalars, ""
            )
        y = F.conv2d(x, w, b, stride, pad, dil, groups)
        return y if slope is None else F.leaky_relu_(y, slope)

    def conv_add_(self, other: torch.Tensor, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``other += m(x)`` in place; returns ``other``."""
        w, b = _prepared(m)
        pad, stride, dil, groups = self._geometry(_conv_of(m))
        if self.fused:
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                other, x, w, b, pad, stride, dil, groups, "add", None, None, [], ""
            )
        return other.add_(F.conv2d(x, w, b, stride, pad, dil, groups))

    def conv_transpose(self, m: nn.Module, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``ConvTranspose1d`` ``m(x)`` on x ``[B, C, 1, T]``."""
        w, b = _prepared(m, scale)
        c = _conv_of(m)
        return F.conv_transpose2d(
            x, w, b, (1, c.stride[0]), (0, c.padding[0]), (0, c.output_padding[0]),
            c.groups, (1, c.dilation[0]),
        )  # fmt: skip

    def resblock(self, block: nn.Module, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """ResBlock1/ResBlock2 without a mask on x ``[B, C, 1, T]``; neither x nor
        ``act = leaky_relu(x, LRELU_SLOPE)`` (shared by the stage's blocks) is modified."""
        if isinstance(block, ResBlock1):
            pairs = list(zip(block.convs1, block.convs2))
        else:
            pairs = [(c, None) for c in block.convs]
        out = None
        for c1, c2 in pairs:
            xt = act if out is None else F.leaky_relu(out, LRELU_SLOPE)
            if c2 is not None:
                xt = self.conv(c1, xt, slope=LRELU_SLOPE)
            last = c1 if c2 is None else c2
            if out is None:
                out = x.clone(memory_format=_CL)  # x is shared by all blocks of the stage
            out = self.conv_add_(out, last, xt)
        return out


def can_decode_fast(dec: nn.Module) -> bool:
    """True if :func:`decode_fast` computes what ``dec`` would: a :class:`Generator` whose
    resblocks are the known kinds, plain zero-padded convs, and no LoRA dropout active."""
    if not isinstance(dec, Generator):
        return False
    if not all(isinstance(b, ResBlock1 | ResBlock2) for b in dec.resblocks):
        return False
    for m in dec.modules():
        if _is_lora(m) and m.training and getattr(m, "dropout", 0.0) > 0:
            return False
        if isinstance(m, nn.Conv1d | nn.ConvTranspose1d) and m.padding_mode != "zeros":
            return False
    return True


@torch.no_grad()
def decode_fast(
    dec: Generator,
    x: torch.Tensor,
    f0: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    n_res: int | None = None,
    crop: tuple[int, int] | None = None,
    source_noise: torch.Tensor | None = None,
    source_phase: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dec(x, f0, g, n_res, source_noise, source_phase)`` (inference only), optionally cropped.

    Args:
        dec: the decoder (see :func:`can_decode_fast`).
        x: latent ``[B, C, T]``; f0 ``[B, T]`` Hz (NSF decoders); g ``[B, gin, 1]``.
        n_res: resample the latent to this many frames first (formant shift); not with crop.
        crop: ``(head, tail)`` frames of OUTPUT to drop; only the rest plus a margin of
            :func:`decoder_receptive_field` frames is decoded.
    Returns:
        ``[B, 1, T_out * upp]`` with ``T_out = (n_res or T) - head - tail``.
    """
    if crop is not None and n_res is not None:
        raise ValueError("crop and n_res cannot be combined")
    har = None
    if dec.m_source is not None:
        if f0 is None:
            raise ValueError("this decoder is pitch-driven (NSF): pass f0 [B, T] in Hz")
        # Full length even when cropping: the sine phase accumulates from frame 0 and the noise
        # is drawn for every sample, in the RNG order of the module path.
        har = dec.m_source(f0, dec.upp, source_noise, source_phase).transpose(1, 2)  # [B, 1, T*upp]
        if n_res is not None and n_res * dec.upp != har.shape[-1]:
            har = F.interpolate(har, size=n_res * dec.upp, mode="linear")
    if n_res is not None and n_res != x.shape[-1]:
        x = F.interpolate(x, size=n_res, mode="linear")
    keep = None
    if crop is not None:
        t = x.shape[-1]
        head, tail = int(crop[0]), int(crop[1])
        if head < 0 or tail < 0:
            raise ValueError(f"crop must be >= 0 frames each side, got {crop}")
        if head + tail >= t:
            return x.new_zeros(x.shape[0], 1, 0)
        margin = decoder_receptive_field(dec)
        start, end = max(head - margin, 0), min(t - tail + margin, t)
        x = x[..., start:end]
        if har is not None:
            har = har[..., start * dec.upp : end * dec.upp]
        keep = slice((head - start) * dec.upp, (t - tail - start) * dec.upp)
    run = _Runner(x)
    x = x.unsqueeze(2).contiguous(memory_format=_CL)  # [B, C, 1, T]
    if har is not None:
        har = har.unsqueeze(2).contiguous(memory_format=_CL)  # [B, 1, 1, T*upp]
    x = run.conv(dec.conv_pre, x)
    if g is not None and dec.cond is not None:
        x.add_(run.conv(dec.cond, g.unsqueeze(2)))  # [B, C, 1, 1] broadcast over time
    nk = dec.num_kernels
    for i, up in enumerate(dec.ups):
        # x is fresh (conv_pre / cond add / block sum): activate in place. From stage 1 on, x
        # is the block sum without its 1/nk, which this conv's weight carries instead.
        x = run.conv_transpose(up, F.leaky_relu_(x, LRELU_SLOPE), scale=1.0 if i == 0 else 1 / nk)
        if har is not None:
            x = run.conv_add_(x, dec.noise_convs[i], har)
        blocks = dec.resblocks[i * nk : (i + 1) * nk]
        act = F.leaky_relu(x, LRELU_SLOPE)  # every block starts with it: computed once
        total = run.resblock(blocks[0], x, act)
        for block in blocks[1:]:
            total += run.resblock(block, x, act)
        x = total
    x = run.conv(dec.conv_post, F.leaky_relu_(x, POST_SLOPE), scale=1 / nk)
    out = torch.tanh_(x).squeeze(2)  # [B, 1, N]: one channel, so any layout is contiguous
    return out if keep is None else out[..., keep]


# -- receptive field ---------------------------------------------------------------------------
def _same_conv_reach(c: nn.Module) -> tuple[int, int]:
    """Samples a stride-1 conv reads left and right of its output position."""
    c = _conv_of(c)
    if c.stride[0] != 1:
        raise ValueError(f"expected a stride-1 conv, got stride {c.stride[0]}")
    span = c.dilation[0] * (c.kernel_size[0] - 1)
    return c.padding[0], span - c.padding[0]


def _block_reach(block: nn.Module) -> tuple[int, int]:
    convs = [*block.convs1, *block.convs2] if isinstance(block, ResBlock1) else list(block.convs)
    reaches = [_same_conv_reach(c) for c in convs]
    return sum(r[0] for r in reaches), sum(r[1] for r in reaches)


def decoder_receptive_field(dec: Generator) -> int:
    """Latent frames on each side of a kept output region that can change its samples.

    Walks from the output back to the latent: stride-1 convs add their reach, parallel resblocks
    take the widest, a transposed conv of stride u maps a reach of r samples to frames of its
    input, and each stage's ``noise_conv`` adds the excitation samples it reads. At every level
    the reach is rounded up to whole latent frames, since a cropped decode is frame-aligned at
    every rate; the answer is the largest of these, so decoding ``margin`` extra frames each
    side (excitation sliced alike) leaves the kept samples as the full decode computes them.
    """
    strides = [int(_conv_of(u).stride[0]) for u in dec.ups]
    upps = [math.prod(strides[: i + 1]) for i in range(len(strides))]  # samples per frame
    left, right = _same_conv_reach(dec.conv_post)  # at the output rate
    need = math.ceil(max(left, right) / dec.upp)
    nk = dec.num_kernels
    for i in reversed(range(len(dec.ups))):
        reaches = [_block_reach(b) for b in dec.resblocks[i * nk : (i + 1) * nk]]
        left += max(r[0] for r in reaches)
        right += max(r[1] for r in reaches)
        rate = upps[i]  # samples per latent frame at this stage
        need = max(need, math.ceil(max(left, right) / rate))
        if dec.noise_convs is not None:
            nc = _conv_of(dec.noise_convs[i])
            s, p = nc.stride[0], nc.padding[0]
            span = nc.dilation[0] * (nc.kernel_size[0] - 1)
            # excitation samples (output rate) read beyond the kept region's first/last sample
            har_left = left * s + p
            har_right = right * s + span - p - (s - 1)
            need = max(need, math.ceil(max(har_left, har_right, 0) / dec.upp))
        up = _conv_of(dec.ups[i])
        u, p = up.stride[0], up.padding[0]
        span = up.dilation[0] * (up.kernel_size[0] - 1)
        # output n reads input i where n = i*u - p + j*dilation, 0 <= j < k
        left = max((left + span - p) // u, 0)
        right = max(-((-(right + p)) // u), 0)
    pre_left, pre_right = _same_conv_reach(dec.conv_pre)
    return max(need, left + pre_left, right + pre_right)
