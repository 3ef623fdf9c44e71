"""LoRA wrapper behaviour that mutation testing (docs/mutation.md) found unchecked: weight-norm
detection edge cases, exact refusal messages, the device of new parameters, the dropout rate, the
legacy ``.weight`` cache after merge, ``unload()``'s default, and DoRA's zero guard when weight
norm runs over dim 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from rvc_lora.lora import LoraConv1d, LoraConvTranspose1d, LoraError, LoraLinear
from rvc_lora.lora.layers import weight_norm_kind
from rvc_lora.models.nn import apply_weight_norm
from tests.lora.test_layers_math import (
    TOL,
    make_base,
    make_input,
    make_layer,
    ref_base_weight,
    ref_op,
    rel_err,
)


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_weight_norm_kind_of_each_flavour() -> None:
    assert weight_norm_kind(nn.Linear(3, 2)) == ("plain", 0)
    assert weight_norm_kind(make_base("conv", "legacy_d1")) == ("legacy", 1)
    assert weight_norm_kind(make_base("conv", "param")) == ("param", 0)
    # hooks and parametrizations that are not the weight's own weight norm change nothing
    hooked = nn.Linear(3, 2)
    hooked.register_forward_pre_hook(lambda module, args: None)
    assert weight_norm_kind(hooked) == ("plain", 0)
    bias_only = nn.Linear(3, 2)
    parametrize.register_parametrization(bias_only, "bias", _Double())
    assert weight_norm_kind(bias_only) == ("plain", 0)


def test_weight_norm_kind_refuses_other_weight_parametrizations() -> None:
    tail = "; LoRA supports plain weights or weight norm only"
    doubled = nn.Linear(3, 2)
    parametrize.register_parametrization(doubled, "weight", _Double())
    with pytest.raises(LoraError) as err:
        weight_norm_kind(doubled)
    assert str(err.value) == "ParametrizedLinear.weight is parametrized by ['_Double']" + tail
    stacked = apply_weight_norm(nn.Conv1d(3, 2, 1))
    parametrize.register_parametrization(stacked, "weight", _Double())
    with pytest.raises(LoraError) as err:
        weight_norm_kind(stacked)
    assert str(err.value) == (
        "ParametrizedConv1d.weight is parametrized by ['_WeightNorm', '_Double']" + tail
    )
    buffer_weight = nn.Linear(3, 2)
    w = buffer_weight.weight.detach()
    del buffer_weight.weight
    buffer_weight.register_buffer("weight", w)
    with pytest.raises(LoraError) as err:
        weight_norm_kind(buffer_weight)
    assert str(err.value) == "Linear has no weight parameter to adapt"


@pytest.mark.parametrize(
    "wrap, base", [(LoraConv1d, nn.Conv1d), (LoraConvTranspose1d, nn.ConvTranspose1d)]
)
def test_conv_refusals_word_for_word(wrap, base) -> None:
    name = base.__name__
    with pytest.raises(LoraError) as err:
        wrap(base(4, 4, 3, groups=2), 2, 2.0)
    assert str(err.value) == (
        f"{name} with groups=2 is not supported (LoRA needs groups=1); exclude this module"
    )
    if base is nn.Conv1d:  # ConvTranspose1d itself only takes 'zeros'
        with pytest.raises(LoraError) as err:
            wrap(base(4, 4, 3, padding_mode="reflect"), 2, 2.0)
        assert str(err.value) == (
            "Conv1d with padding_mode='reflect' is not supported (only 'zeros'); exclude this module"
        )


def test_dora_refuses_any_dropout_and_a_merged_adapter_refuses_disable() -> None:
    for p in (0.1, 0.5):
        with pytest.raises(LoraError) as err:
            LoraLinear(nn.Linear(3, 2), 2, 2.0, dropout=p, use_dora=True)
        assert str(err.value) == "dropout must be 0 with use_dora=true; set dropout=0"
    layer = make_layer("linear", "plain", "lora")
    layer.merge()
    with pytest.raises(LoraError) as err:
        layer.disable()
    assert str(err.value) == "cannot disable a merged adapter; call unmerge() first"
    assert layer.disabled is False


@pytest.mark.parametrize("use_dora", [False, True])
def test_adapter_parameters_live_on_the_bases_device(use_dora: bool) -> None:
    # the meta device stands in for a GPU: a wrapper that ignored the base's device would put
    # its parameters on the default (CPU) device
    layer = LoraConv1d(nn.Conv1d(4, 3, 3, device="meta"), 2, 2.0, use_dora=use_dora)
    params = [layer.lora_A, layer.lora_B] + ([layer.lora_magnitude] if use_dora else [])
    assert [p.device.type for p in params] == ["meta"] * len(params)


def test_dropout_drops_at_the_configured_rate() -> None:
    # A = B = I and a zero base: the output is the dropped input itself, x * mask / (1 - p)
    n, p = 64, 0.25
    base = nn.Linear(n, n, bias=False)
    layer = LoraLinear(base, n, float(n), dropout=p).train()
    with torch.no_grad():
        base.weight.zero_()
        layer.lora_A.copy_(torch.eye(n))
        layer.lora_B.copy_(torch.eye(n))
        y = layer(torch.ones(1000, n))
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(1 / (1 - p)))
    assert abs(1 - kept.float().mean().item() - p) < 0.01  # 64000 draws: sd 0.0017


def test_merge_and_unmerge_refresh_the_legacy_weight_cache() -> None:
    # RVC code may read a legacy weight-normed layer's `.weight` before any forward
    layer = make_layer("conv", "legacy", "lora")
    base = layer.base_layer
    with torch.no_grad():
        w_base = ref_base_weight(base, "legacy")
        w_merged = layer.effective_weight()
        layer.merge()
        assert rel_err(base.weight, w_merged) <= TOL
        layer.unmerge()
        assert rel_err(base.weight, w_base) <= TOL


def test_unload_merges_by_default() -> None:
    layer = make_layer("convT", "param", "lora")
    x = make_input("convT")
    with torch.no_grad():
        y = layer(x)
        base = layer.unload()
        assert layer.merged and base is layer.base_layer
        assert rel_err(base(x), y) <= TOL


def test_dora_zero_channel_under_weight_norm_over_dim_1() -> None:
    # g = 0 for one input channel (dim 1): the zero guard must look along the same dim
    base = make_base("conv", "legacy_d1")
    with torch.no_grad():
        base.weight_g.view(-1)[0] = 0.0
    x = make_input("conv")
    layer = LoraConv1d(base, 4, 6.0, use_dora=True).eval()
    with torch.no_grad():
        y_ref = ref_op(base, "conv", x, ref_base_weight(base, "legacy_d1"))
        y = layer(x)
    assert torch.isfinite(y).all() and rel_err(y, y_ref) <= TOL
