"""The wrappers' arithmetic against hand-written float64 references.

The references below never call the code under test for a formula: the delta is an einsum over
the documented A/B layouts, scale factors are literal numbers, DoRA's norm is a sum of squares
over explicit dims. A formula edit in lora/layers.py (scale, layout, norm dim, dropout placement,
merge) therefore changes the wrapper but not the reference.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.lora import LoraConv1d, LoraConvTranspose1d, LoraError, LoraLinear
from rvc_lora.models.nn import apply_weight_norm

RANK, ALPHA = 4, 6.0
# alpha / r = 6 / 4 and alpha / sqrt(r) = 6 / 2, written out so a swapped ratio cannot match.
SCALE = {"lora": 1.5, "rslora": 3.0, "dora": 1.5}
VARIANTS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}
KINDS = ["linear", "conv", "convT"]
# legacy_d1: weight norm over dim 1, so code that assumes dim 0 anywhere is caught.
FLAVOURS = ["plain", "legacy", "param", "legacy_d1"]
WRAP = {"linear": LoraLinear, "conv": LoraConv1d, "convT": LoraConvTranspose1d}
TOL = 1e-10  # float64 throughout


def _new_layer(kind: str) -> nn.Module:
    # in != out channels, kernel > 1, stride > 1, padding, dilation (and output_padding for the
    # transposed conv): every geometry argument changes the output.
    return {
        "linear": lambda: nn.Linear(5, 3),
        "conv": lambda: nn.Conv1d(5, 3, 3, stride=2, padding=2, dilation=2),
        "convT": lambda: nn.ConvTranspose1d(
            5, 3, 4, stride=3, padding=2, output_padding=1, dilation=2
        ),
    }[kind]().double()


def make_base(kind: str, flavour: str, seed: int = 0) -> nn.Module:
    """A float64 base layer; weight-normed ones get g != ||v|| and one negative g."""
    torch.manual_seed(seed)
    base = _new_layer(kind)
    if flavour == "plain":
        return base
    if flavour == "param":
        base = apply_weight_norm(base)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            base = torch.nn.utils.weight_norm(base, dim=1 if flavour == "legacy_d1" else 0)
    with torch.no_grad():
        g = _g(base)
        g.mul_(torch.rand_like(g) + 0.5)
        g.view(-1)[1].neg_()
    return base


def _g(base: nn.Module) -> torch.Tensor:
    if hasattr(base, "parametrizations"):
        return base.parametrizations.weight.original0
    return base.weight_g


def _v(base: nn.Module) -> torch.Tensor:
    if hasattr(base, "parametrizations"):
        return base.parametrizations.weight.original1
    return base.weight_v


def _wn_dim(flavour: str) -> int:
    return 1 if flavour == "legacy_d1" else 0


def make_input(kind: str, seed: int = 1) -> torch.Tensor:
    """x ``[2, 7, 5]`` (linear) or ``[2, 5, 11]`` (conv)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 7, 5) if kind == "linear" else (2, 5, 11)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@torch.no_grad()
def randomize(layer: nn.Module, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g, dtype=torch.float64) * 0.3)
    layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64) * 0.3)
    if layer.lora_magnitude is not None:
        m = layer.lora_magnitude
        m.mul_(1 + 0.3 * torch.rand(m.shape, generator=g, dtype=torch.float64))


def make_layer(kind: str, flavour: str, variant: str, dropout: float = 0.0) -> nn.Module:
    layer = WRAP[kind](make_base(kind, flavour), RANK, ALPHA, dropout=dropout, **VARIANTS[variant])
    randomize(layer)
    return layer.eval()


def _norm(w: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm over every dim but ``dim``, kept for broadcasting."""
    return w.pow(2).sum([d for d in range(w.dim()) if d != dim], keepdim=True).sqrt()


def ref_base_weight(base: nn.Module, flavour: str) -> torch.Tensor:
    if flavour == "plain":
        return base._parameters["weight"]
    g, v = _g(base), _v(base)
    return g * v / _norm(v, _wn_dim(flavour))


def ref_delta(layer: nn.Module, kind: str) -> torch.Tensor:
    """Unscaled B A in the base weight's layout, from the documented factor shapes."""
    a, b = layer.lora_A, layer.lora_B
    if kind == "linear":  # W [out, in]; A [r, in]; B [out, r]
        return torch.einsum("or,ri->oi", b, a)
    if kind == "conv":  # W [out, in, k]; A [r, in*k] (k fastest); B [out, r]
        out_c, in_c, k = layer.base_layer.out_channels, layer.base_layer.in_channels, 3
        return torch.einsum("or,rik->oik", b, a.reshape(RANK, in_c, k))
    # ConvTranspose1d: W [in, out, k]; A [r, in] faces the input; B [out*k, r] (k fastest)
    out_c, k = layer.base_layer.out_channels, 4
    return torch.einsum("ri,okr->iok", a, b.reshape(out_c, k, RANK))


def ref_weight(layer: nn.Module, kind: str, flavour: str, variant: str) -> torch.Tensor:
    """LoRA: W + s dW. DoRA: m * (W + s dW) / ||W + s dW|| per weight-norm channel, the sign of
    a negative g kept (plain weights: channel = dim 0 and m starts at ||W|| >= 0)."""
    w = ref_base_weight(layer.base_layer, flavour)
    direction = w + SCALE[variant] * ref_delta(layer, kind)
    if variant != "dora":
        return direction
    dim = 0 if flavour == "plain" else _wn_dim(flavour)
    n = _norm(direction, dim)
    m = layer.lora_magnitude.reshape(n.shape)
    if flavour != "plain":
        m = m * torch.where(_g(layer.base_layer) < 0, -1.0, 1.0)
    return m * direction / torch.where(n == 0, 1.0, n)  # a zero direction stays zero


def ref_op(base: nn.Module, kind: str, x: torch.Tensor, w: torch.Tensor, bias: bool = True):
    b = base.bias if bias else None
    if kind == "linear":
        return F.linear(x, w, b)
    if kind == "conv":
        return F.conv1d(x, w, b, stride=2, padding=2, dilation=2)
    return F.conv_transpose1d(x, w, b, stride=3, padding=2, output_padding=1, dilation=2)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


all_kinds = pytest.mark.parametrize("kind", KINDS)
all_flavours = pytest.mark.parametrize("flavour", FLAVOURS)
all_variants = pytest.mark.parametrize("variant", list(VARIANTS))


# --- forward against the reference ---------------------------------------------------------
@all_kinds
@all_flavours
@all_variants
def test_output_matches_float64_reference(kind, flavour, variant):
    layer = make_layer(kind, flavour, variant)
    x = make_input(kind)
    with torch.no_grad():
        y = layer(x)
        w_ref = ref_weight(layer, kind, flavour, variant)
        assert rel_err(layer.effective_weight(), w_ref) <= TOL
        assert rel_err(y, ref_op(layer.base_layer, kind, x, w_ref)) <= TOL
        # The adapter really moves the output, so a dropped term could not pass unnoticed.
        w0 = ref_base_weight(layer.base_layer, flavour)
        assert rel_err(y, ref_op(layer.base_layer, kind, x, w0)) > 0.05


@all_kinds
def test_scale_attribute_is_alpha_over_rank_or_its_square_root(kind):
    for variant, scale in SCALE.items():
        assert make_layer(kind, "plain", variant).scale == scale


# --- ConvTranspose1d layout: two independent checks ------------------------------------------
@pytest.mark.parametrize("flavour", ["plain", "legacy", "param"])
@pytest.mark.parametrize("variant", ["lora", "rslora"])
def test_conv_transpose_equals_low_rank_stack_and_its_merge(flavour, variant):
    """(a) The adapter is, by definition, a 1x1 conv with A followed by a transposed conv with
    B (as [r, out, k]) beside the base. Built from torch modules here, it must equal the wrapper
    and the merged plain layer."""
    layer = make_layer("convT", flavour, variant)
    base = layer.base_layer
    x = make_input("convT")
    down = nn.Conv1d(5, RANK, 1, bias=False).double()
    up = nn.ConvTranspose1d(
        RANK, 3, 4, stride=3, padding=2, output_padding=1, dilation=2, bias=False
    ).double()
    with torch.no_grad():
        down.weight.copy_(layer.lora_A[:, :, None])  # [r, in, 1]
        up.weight.copy_(layer.lora_B.t().reshape(RANK, 3, 4))  # [r, out, k]
        y_base = base(x)
        y_stack = y_base + SCALE[variant] * up(down(x))
        y = layer(x)
        assert y.shape == (2, 3, (11 - 1) * 3 - 2 * 2 + 2 * (4 - 1) + 1 + 1)
        assert rel_err(y, y_stack) <= TOL
        assert rel_err(y, y_base) > 0.05
        merged = layer.unload(merge=True)
        assert isinstance(merged, nn.ConvTranspose1d)
        assert rel_err(merged(x), y_stack) <= TOL
        plain = _new_layer("convT")  # a fresh plain layer holding the merged weight
        plain.weight.copy_(ref_base_weight(merged, flavour))
        plain.bias.copy_(merged.bias)
        assert rel_err(plain(x), y_stack) <= TOL


@pytest.mark.parametrize("flavour", ["plain", "legacy", "param"])
@pytest.mark.parametrize("output_size", [None, 33, 34])
def test_conv_transpose_float64_reference_convolution(flavour, output_size):
    """(b) Effective weight W(g, v) + s * (A^T B^T) in the [in, out, k] layout, run through
    F.conv_transpose1d by hand; also with an explicit output_size (output_padding 0 and 1)."""
    layer = make_layer("convT", flavour, "lora")
    x = make_input("convT")
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    w = ref_base_weight(layer.base_layer, flavour).detach()
    delta = torch.zeros(5, 3, 4, dtype=torch.float64)
    for i in range(5):
        for o in range(3):
            for t in range(4):
                delta[i, o, t] = sum(a[r, i] * b[o * 4 + t, r] for r in range(RANK))
    out_pad = 0 if output_size == 33 else 1
    ref = F.conv_transpose1d(
        x, w + 1.5 * delta, layer.base_layer.bias.detach(), 3, 2, out_pad, 1, 2
    )
    with torch.no_grad():
        y = layer(x) if output_size is None else layer(x, output_size=[output_size])
    assert y.shape[-1] == (output_size or 34)
    assert rel_err(y, ref) <= TOL


# --- dropout -----------------------------------------------------------------------------
@all_kinds
@pytest.mark.parametrize("flavour", ["plain", "param"])
def test_dropout_never_touches_the_base_path(kind, flavour):
    layer = WRAP[kind](make_base(kind, flavour), RANK, ALPHA, dropout=0.5).train()
    x = make_input(kind)
    with torch.no_grad():
        y_base = layer.base_layer(x)
        # B = 0: whatever dropout does to the branch input, the output is the base's.
        for _ in range(3):
            assert torch.equal(layer(x), y_base)


@all_kinds
@pytest.mark.parametrize("flavour", ["plain", "legacy", "param"])
def test_dropout_branch_matches_reference_with_the_same_mask(kind, flavour):
    layer = make_layer(kind, flavour, "lora", dropout=0.5)
    base = layer.base_layer
    x = make_input(kind)
    with torch.no_grad():
        layer.train()
        torch.manual_seed(3)
        y_train = layer(x)
        torch.manual_seed(3)
        mask = F.dropout(torch.ones_like(x), 0.5, training=True)  # the same draw as inside
        w0 = ref_base_weight(base, flavour)
        expected = ref_op(base, kind, x, w0)
        expected += ref_op(base, kind, x * mask, 1.5 * ref_delta(layer, kind), bias=False)
        assert rel_err(y_train, expected) <= TOL
        layer.eval()
        no_drop = ref_op(base, kind, x, ref_weight(layer, kind, flavour, "lora"))
        assert rel_err(layer(x), no_drop) <= TOL
        assert rel_err(y_train, no_drop) > 1e-3


# --- disable / merge / unmerge --------------------------------------------------------------
@all_kinds
@all_flavours
@all_variants
def test_disable_gives_the_base_exactly_and_enable_restores(kind, flavour, variant):
    layer = make_layer(kind, flavour, variant)
    x = make_input(kind)
    with torch.no_grad():
        y_lora = layer(x)
        y_base = ref_op(layer.base_layer, kind, x, ref_base_weight(layer.base_layer, flavour))
        layer.disable()
        assert torch.equal(layer(x), layer.base_layer(x))
        assert rel_err(layer(x), y_base) <= TOL
        layer.enable()
        assert torch.equal(layer(x), y_lora)


@all_kinds
@all_flavours
@all_variants
def test_merge_writes_the_reference_weight_and_unmerge_restores_bits(kind, flavour, variant):
    layer = make_layer(kind, flavour, variant)
    base = layer.base_layer
    x = make_input(kind)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        y_lora = layer(x)
        w_ref = ref_weight(layer, kind, flavour, variant)
        layer.merge()
        assert list(base.state_dict()) == list(before)  # same names, nothing added
        assert rel_err(ref_base_weight(base, flavour), w_ref) <= TOL
        assert rel_err(base(x), y_lora) <= TOL
        assert rel_err(layer(x), y_lora) <= TOL
        with pytest.raises(LoraError, match="already merged"):
            layer.merge()
        layer.unmerge()
        after = base.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert torch.equal(layer(x), y_lora)


# --- DoRA with a dead channel ---------------------------------------------------------------
def _zero_channel(base: nn.Module, flavour: str) -> None:
    """Zero the first DoRA channel's weight: W's dim-0 slice, or g (v stays: v = 0 is NaN in
    the base itself)."""
    with torch.no_grad():
        if flavour == "plain":
            base.weight[0].zero_()
        else:
            _g(base).view(-1)[0] = 0.0


def _assert_finite_backward(layer: nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    (layer(x) * torch.linspace(-1, 1, layer(x).numel()).view_as(layer(x))).sum().backward()
    params = [layer.lora_A, layer.lora_B] + (
        [layer.lora_magnitude] if layer.lora_magnitude is not None else []
    )
    for p in [x, *params]:
        assert p.grad is not None and torch.isfinite(p.grad).all()


@all_kinds
@pytest.mark.parametrize("flavour", ["plain", "legacy", "param"])
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_zero_channel_stays_finite_forward_backward_and_merged(kind, flavour, variant):
    base = make_base(kind, flavour)
    _zero_channel(base, flavour)
    x = make_input(kind)
    with torch.no_grad():
        y_base = base(x)
    layer = WRAP[kind](base, RANK, ALPHA, **VARIANTS[variant]).eval()
    # B = 0: the base's output exactly, gradients finite.
    with torch.no_grad():
        assert torch.isfinite(y_base).all() and torch.equal(layer(x), y_base)
    _assert_finite_backward(layer, x)
    with torch.no_grad():
        layer.merge()
        assert torch.equal(base(x), y_base)
        layer.unmerge()
    # Trained state: B != 0 and, for DoRA, a magnitude that has left 0 on the dead channel.
    randomize(layer)
    if layer.lora_magnitude is not None:
        with torch.no_grad():
            layer.lora_magnitude[0] = 0.7
    with torch.no_grad():
        y = layer(x)
        assert rel_err(y, ref_op(base, kind, x, ref_weight(layer, kind, flavour, variant))) <= TOL
    _assert_finite_backward(layer, x)
    with torch.no_grad():
        layer.merge()
        assert rel_err(base(x), y) <= TOL
