"""The invariant battery: every layer kind x weight-norm flavour (x LoRA/rsLoRA/DoRA)."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.lora import (
    LoraError,
    disable_lora,
    inject_lora,
    lora_layers,
    merge_lora,
    trainable_parameters,
    unload_lora,
    unmerge_lora,
)
from tests.lora.tiny import (
    VARIANT_KW,
    clone_state,
    combos,
    config,
    make_input,
    make_model,
    randomize_adapter,
    rel_err,
    variants,
)


@combos
@variants
def test_zero_b_is_the_base_exactly(kind, flavour, variant):
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    y_base = model(x, sid)
    assert inject_lora(model, config(**VARIANT_KW[variant])) == ["body.0"]
    assert torch.equal(model(x, sid), y_base)


@combos
@variants
def test_merge_equals_unmerged_and_unmerge_is_exact(kind, flavour, variant):
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    y_base = model(x, sid)
    inject_lora(model, config(**VARIANT_KW[variant]))
    randomize_adapter(model)
    y_lora = model(x, sid)
    assert rel_err(y_lora, y_base) > 1e-2  # the adapter really changes the output
    before = clone_state(model)
    merge_lora(model)
    assert rel_err(model(x, sid), y_lora) <= 1e-5
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert changed and all(".base_layer." in k for k in changed)
    with pytest.raises(LoraError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(model(x, sid), y_lora)
    with pytest.raises(LoraError, match="not merged"):
        unmerge_lora(model)


@combos
def test_unload_gives_the_base_key_set_and_the_merged_output(kind, flavour):
    base = make_model(kind, flavour)
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    if flavour != "plain":
        assert {"body.0.weight_g", "body.0.weight_v"} <= set(shapes)
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    inject_lora(model, config())
    randomize_adapter(model)
    y_lora = model(x, sid)
    merge_lora(model)
    y_merged = model(x, sid)
    unload_lora(model, merge=True)
    assert not lora_layers(model)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert torch.equal(model(x, sid), y_merged)
    assert rel_err(model(x, sid), y_lora) <= 1e-5


@combos
def test_unload_without_merge_restores_the_base(kind, flavour):
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    y_base, state = model(x, sid), clone_state(model)
    inject_lora(model, config())
    randomize_adapter(model)
    merge_lora(model)
    unload_lora(model, merge=False)
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(state[k], after[k]) for k in state)
    assert torch.equal(model(x, sid), y_base)
    assert all(p.requires_grad for p in model.parameters())  # flags from before injection


@combos
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_training_moves_only_adapter_and_extras(kind, flavour, variant):
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    inject_lora(model, config(extra_trainable=[r"emb\.weight"], **VARIANT_KW[variant]))
    trainable = trainable_parameters(model)
    expected = {"body.0.lora_A", "body.0.lora_B", "emb.weight"}
    expected |= {"body.0.lora_magnitude"} if variant == "dora" else set()
    assert set(trainable) == expected
    ids = {id(p) for p in trainable.values()}
    assert all(p.requires_grad == (id(p) in ids) for p in model.parameters())
    before = clone_state(model)
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.01)
    target = torch.randn_like(model(x, sid))
    for _ in range(3):
        opt.zero_grad()
        loss = (model(x, sid) - target).pow(2).mean()
        loss.backward()
        opt.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == expected


@combos
def test_base_loaded_after_wrapping_is_used(kind, flavour):
    model = make_model(kind, flavour, seed=0)
    donor = make_model(kind, flavour, seed=1)
    x, sid = make_input(kind)
    inject_lora(model, config())
    assert rel_err(model(x, sid), donor(x, sid)) > 1e-2
    renamed = {
        k.replace("body.0.", "body.0.base_layer.", 1): v for k, v in donor.state_dict().items()
    }
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert sorted(missing) == ["body.0.lora_A", "body.0.lora_B"] and not unexpected
    assert torch.equal(model(x, sid), donor(x, sid))
    # Same through the base layer itself, back to the first weights.
    first = make_model(kind, flavour, seed=0)
    lora_layers(model)["body.0"].base_layer.load_state_dict(first.body[0].state_dict())
    model.post.load_state_dict(first.post.state_dict())
    model.emb.load_state_dict(first.emb.state_dict())
    assert torch.equal(model(x, sid), first(x, sid))


@combos
def test_disable_context_gives_the_base(kind, flavour):
    model = make_model(kind, flavour)
    x, sid = make_input(kind)
    y_base = model(x, sid)
    inject_lora(model, config())
    randomize_adapter(model)
    y_lora = model(x, sid)
    with disable_lora(model):
        assert torch.equal(model(x, sid), y_base)
    assert torch.equal(model(x, sid), y_lora)
    merge_lora(model)
    with pytest.raises(LoraError, match="unmerge"), disable_lora(model):
        pass


@combos
def test_rslora_scale_and_dora_magnitude(kind, flavour):
    layer_r = _wrapped(kind, flavour, rank=4, alpha=6.0, use_rslora=True)
    assert layer_r.scale == pytest.approx(6.0 / 2.0)
    assert _wrapped(kind, flavour, rank=4, alpha=6.0).scale == pytest.approx(1.5)
    layer = _wrapped(kind, flavour, use_dora=True)
    _, g, dim = layer._decomposition()
    base_w = layer.base_weight().detach()
    with torch.no_grad():
        layer.lora_magnitude.mul_(2.0)  # B = 0: the weight doubles, direction unchanged
        assert rel_err(layer.effective_weight(), 2 * base_w) <= 1e-6
        randomize_adapter(_Holder(layer))
        w = layer.effective_weight()
        # DoRA: the per-channel norm of the adapted weight is |magnitude|, whatever B is.
        norms = torch.norm_except_dim(w, 2, dim).reshape(-1)
        assert torch.allclose(norms, layer.lora_magnitude.abs(), rtol=1e-5)
        assert rel_err(w, base_w) > 1e-2
        # ... and its direction is DoRA's (W + dW) / ||W + dW|| (sign of g kept for WN bases).
        m = layer.lora_magnitude.view(g.shape) * torch.sign(g)
        direction = base_w + layer.delta_weight()
        reference = m * direction / torch.norm_except_dim(direction, 2, dim)
        assert rel_err(w, reference) <= 1e-5


class _Holder(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer


def _wrapped(kind, flavour, **kw):
    model = make_model(kind, flavour)
    inject_lora(model, config(**kw))
    return lora_layers(model)["body.0"]
