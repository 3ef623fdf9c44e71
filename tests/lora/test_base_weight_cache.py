"""The cached frozen base weight (issue 17): bit-identical to recomputing, reused, invalidated.

The reference is the same wrapper under ``reference_base_weights()``, which recomputes
``_weight_norm(v, g)`` at every use exactly as before the cache existed.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from rvc_lora.lora import LoraConv1d, LoraConvTranspose1d, LoraLinear
from rvc_lora.lora.layers import LoraLayer, reference_base_weights
from rvc_lora.models.nn import apply_weight_norm

KINDS = ["linear", "conv", "convT"]
FLAVOURS = ["legacy", "param"]
WRAP = {"linear": LoraLinear, "conv": LoraConv1d, "convT": LoraConvTranspose1d}
combos = pytest.mark.parametrize("kind", KINDS)
flavours = pytest.mark.parametrize("flavour", FLAVOURS)


def make_layer(kind: str, flavour: str, *, seed: int = 0, **kw: object) -> LoraLayer:
    """A rank-2 wrapper on a weight-normed fp32 base with frozen g, v and a non-zero adapter."""
    torch.manual_seed(seed)
    base = {
        "linear": lambda: nn.Linear(5, 3),
        "conv": lambda: nn.Conv1d(5, 3, 3, padding=2, dilation=2),
        "convT": lambda: nn.ConvTranspose1d(5, 3, 4, stride=3, padding=1),
    }[kind]()
    if flavour == "param":
        base = apply_weight_norm(base)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            base = torch.nn.utils.weight_norm(base)
    base.requires_grad_(False)  # as after inject_lora: the base is frozen
    layer = WRAP[kind](base, 2, 4.0, **kw)
    with torch.no_grad():
        layer.base_params()["g"].mul_(torch.rand_like(layer.base_params()["g"]) + 0.5)
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape) * 0.3)
        if layer.lora_magnitude is not None:
            layer.lora_magnitude.mul_(1.1)
    return layer


def make_x(kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[2, 7, 5]`` (linear) or ``[2, 5, 9]`` (conv)."""
    g = torch.Generator().manual_seed(3)
    shape = (2, 7, 5) if kind == "linear" else (2, 5, 9)
    return torch.randn(*shape, generator=g, dtype=dtype)


def fresh(layer: LoraLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's output with every base weight recomputed (what a fresh wrapper gives)."""
    with reference_base_weights(), torch.no_grad():
        return layer(x)


def step(layer: LoraLayer, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and the gradients of every trainable tensor and of x after ``sum(y**2)``."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(11)  # the same dropout mask in both runs
    y = layer(x)
    (y**2).sum().backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.requires_grad}
    return y.detach(), {**grads, "x": x.grad}


@combos
@flavours
@pytest.mark.parametrize("variant", ["lora", "dora", "dropout"])
def test_outputs_and_grads_bit_equal_to_reference(kind: str, flavour: str, variant: str) -> None:
    kw = {"lora": {}, "dora": {"use_dora": True}, "dropout": {"dropout": 0.3}}[variant]
    layer = make_layer(kind, flavour, **kw)
    x = make_x(kind)
    with reference_base_weights():
        y_ref, g_ref = step(layer, x)
    step(layer, x)  # fills the cache
    y, grads = step(layer, x)  # reads it
    assert torch.equal(y, y_ref)
    assert grads.keys() == g_ref.keys() and len(grads) >= 3  # lora_A, lora_B (+ m), x
    for name, g in grads.items():
        assert torch.equal(g, g_ref[name]), name


@combos
@flavours
def test_unchanged_layer_output_equals_base_layer(kind: str, flavour: str) -> None:
    # B = 0: the cached path must give the base layer's own forward bit for bit (LoraLinear
    # now calls F.linear with the cached weight instead of base_layer(x)).
    layer = make_layer(kind, flavour)
    with torch.no_grad():
        layer.lora_B.zero_()
        x = make_x(kind)
        layer(x)
        assert torch.equal(layer(x), layer.base_layer(x))


@combos
@flavours
def test_cache_is_reused_across_forwards(
    kind: str, flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    calls = []
    real = torch._weight_norm

    def counting(v: torch.Tensor, g: torch.Tensor, dim: int = 0) -> torch.Tensor:
        calls.append(1)
        return real(v, g, dim)

    monkeypatch.setattr(torch, "_weight_norm", counting)
    for _ in range(3):
        step(layer, x)
    assert len(calls) == 1
    assert layer.base_weight() is layer.base_weight()
    with reference_base_weights():
        step(layer, x)
    assert len(calls) == 2  # the reference recomputes at every forward


@combos
@flavours
def test_merge_and_unmerge_invalidate(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    before = fresh(layer, x)
    layer.merge()
    layer.base_weight()  # cache the merged weight
    assert torch.equal(layer(x), fresh(layer, x))
    layer.unmerge()
    assert torch.equal(layer(x), before)


@combos
@flavours
def test_load_state_dict_with_other_g_v_invalidates(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    old = layer(x).detach()
    layer.load_state_dict(make_layer(kind, flavour, seed=5).state_dict())
    y = layer(x).detach()
    assert not torch.equal(y, old)
    assert torch.equal(y, fresh(layer, x))


@combos
@flavours
def test_in_place_edits_invalidate(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    old = layer(x).detach()
    with torch.no_grad():
        layer.base_params()["v"].add_(0.5)  # not a rescale: weight norm ignores v's scale
    y = layer(x).detach()
    assert not torch.equal(y, old)
    assert torch.equal(y, fresh(layer, x))
    with torch.no_grad():
        layer.base_weight().add_(1.0)  # a caller editing the returned tensor
    assert torch.equal(layer(x).detach(), y)


@combos
@flavours
def test_write_through_data_needs_clear(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    layer(x)
    v = layer.base_params()["v"]
    v.data = v.detach() + 0.5  # new storage, same version count: the pointer tells
    y = layer(x).detach()
    assert torch.equal(y, fresh(layer, x))
    v.data.add_(0.5)  # in place, bypassing the version counter
    layer.clear_base_weight_cache()
    assert torch.equal(layer(x).detach(), fresh(layer, x))


@combos
@flavours
def test_double_invalidates_and_frees(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    layer(x)
    layer.double()
    assert layer._base_cache is None  # the fp32 copy is not held until the next forward
    y = layer(x.double()).detach()
    assert y.dtype == torch.float64
    assert torch.equal(y, fresh(layer, x.double()))
    assert layer.base_weight().dtype == torch.float64


@combos
@flavours
def test_trainable_g_gets_gradients(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    step(layer, x)  # a cache entry from the frozen phase must not cut the graph
    layer.base_params()["g"].requires_grad_(True)
    with reference_base_weights():
        y_ref, g_ref = step(layer, x)
    y, grads = step(layer, x)
    assert any(n.endswith("weight_g") or n.endswith("original0") for n in grads)
    assert torch.equal(y, y_ref)
    for name, g in grads.items():
        assert g is not None and torch.equal(g, g_ref[name]), name
    assert layer.base_weight() is not layer.base_weight()


@combos
@flavours
def test_entry_made_in_inference_mode_serves_training(kind: str, flavour: str) -> None:
    # Validation runs under inference_mode; the dropout path then saves the base weight for
    # backward, which an inference tensor would refuse.
    layer, x = make_layer(kind, flavour, dropout=0.3), make_x(kind)
    with reference_base_weights():
        y_ref, g_ref = step(layer, x)
    with torch.inference_mode():
        layer.eval()(x)
    y, grads = step(layer.train(), x)
    assert torch.equal(y, y_ref)
    assert all(torch.equal(g, g_ref[n]) for n, g in grads.items())


@combos
@flavours
def test_state_dict_deepcopy_and_pickle_carry_no_cache(kind: str, flavour: str) -> None:
    layer, x = make_layer(kind, flavour), make_x(kind)
    keys = list(layer.state_dict())
    y = layer(x).detach()
    assert layer._base_cache is not None
    assert list(layer.state_dict()) == keys
    if flavour == "legacy":
        # torch refuses to pickle parametrized modules; legacy weight norm pickles once its
        # hook's `.weight` attribute has been recomputed from the frozen g, v (no grad_fn).
        layer.base_layer(x)
        twins = [copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))]
    else:
        twins = [copy.deepcopy(layer)]
    for twin in twins:
        assert twin._base_cache is None
        assert torch.equal(twin(x).detach(), y)
        with torch.no_grad():
            twin.base_params()["v"].add_(0.5)
        assert not torch.equal(twin(x).detach(), y)
    assert torch.equal(layer(x).detach(), y)  # the copies' edits never reach the original
    state = layer.__getstate__()
    del state["_base_cache"]  # a wrapper pickled before the cache existed
    old = type(layer).__new__(type(layer))
    old.__setstate__(state)
    assert torch.equal(old(x).detach(), y)
