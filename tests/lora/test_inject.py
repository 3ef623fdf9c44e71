"""inject_lora: matching, errors, structural trainables, dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.lora import (
    LoraConfig,
    LoraError,
    inject_lora,
    injection,
    lora_layers,
    lora_state_dict,
    trainable_parameters,
    unload_lora,
)
from tests.lora.tiny import KINDS, config, make_input, make_model, randomize_adapter, rel_err


class Decoy(nn.Module):
    """Parameters whose names contain 'lora_A' / 'lora_B' without being adapters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleList([nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)])
        self.lora_A = nn.Linear(4, 4)
        self.extra = nn.ModuleDict({"lora_B": nn.Conv1d(4, 4, 1)})
        self.grouped = nn.Conv1d(4, 4, 3, groups=2)
        self.conv2d = nn.Conv2d(1, 1, 3)
        self.emb = nn.Embedding(2, 4)


def test_pattern_matching_nothing_names_the_pattern_and_neighbours():
    with pytest.raises(LoraError) as err:
        inject_lora(Decoy(), LoraConfig(targets=[r"body\.\d+", r"boddy\.3"]))
    msg = str(err.value)
    assert r"'boddy\\.3'" in msg and "body.1" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("target", "type_name"), [(r"conv2d", "Conv2d"), (r"emb", "Embedding"), (r"body", "ModuleList")]
)
def test_unsupported_type_is_named(target, type_name):
    model = Decoy()
    with pytest.raises(LoraError, match=type_name):
        inject_lora(model, LoraConfig(targets=[target]))
    assert not lora_layers(model) and injection(model) is None  # nothing half-done


def test_grouped_conv_is_refused():
    model = Decoy()
    with pytest.raises(LoraError, match="groups=2"):
        inject_lora(model, LoraConfig(targets=[r"body\.\d+", r"grouped"]))
    assert not lora_layers(model) and injection(model) is None


def test_exclude_and_rank_pattern_and_sorted_names():
    model = Decoy()
    cfg = LoraConfig(
        targets=[r"body\.\d+", r"grouped"], exclude=[r"grouped"], rank_pattern={r"body\.1": 2}
    )
    assert inject_lora(model, cfg) == ["body.0", "body.1"]
    layers = lora_layers(model)
    assert layers["body.1"].lora_A.shape == (2, 4 * 3) and layers["body.0"].rank == 8
    with pytest.raises(LoraError, match="already has LoRA"):
        inject_lora(model, cfg)


def test_trainables_are_structural_not_by_name():
    model = Decoy()
    inject_lora(model, LoraConfig(targets=[r"body\.0"], extra_trainable=[r"emb\.weight"]))
    names = set(trainable_parameters(model))
    assert names == {"body.0.lora_A", "body.0.lora_B", "emb.weight"}
    assert not model.lora_A.weight.requires_grad and not model.extra.lora_B.weight.requires_grad
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == 8 * 12 + 4 * 8 + 2 * 4
    assert set(lora_state_dict(model)) == names


def test_extras_that_match_nothing_or_sit_inside_a_target_are_refused():
    with pytest.raises(LoraError, match="extra_trainable pattern 'emb_g"):
        inject_lora(Decoy(), LoraConfig(targets=[r"body\.0"], extra_trainable=[r"emb_g\.weight"]))
    with pytest.raises(LoraError, match="belongs to LoRA target 'body.0'"):
        inject_lora(Decoy(), LoraConfig(targets=[r"body\.0"], extra_trainable=[r"body\.0\.bias"]))


def test_extras_use_rvc_names_under_parametrized_weight_norm():
    model = make_model("conv_k1", "param")
    inject_lora(model, config(extra_trainable=[r"post\.weight_g"]))
    p = trainable_parameters(model)["post.weight_g"]
    assert p is model.post.parametrizations.weight.original0 and p.requires_grad


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_hits_the_branch_input_only_while_training(kind):
    model = make_model(kind, "legacy")
    x, sid = make_input(kind)
    inject_lora(model, config(dropout=0.5))
    randomize_adapter(model)
    layer = lora_layers(model)["body.0"]
    h = x + (model.emb(sid)[:, None, :] if kind == "linear" else model.emb(sid)[:, :, None])
    with torch.no_grad():
        model.eval()
        y_eval = layer(h)
        model.train()
        torch.manual_seed(3)
        y_train = layer(h)
        torch.manual_seed(3)
        mask = F.dropout(torch.ones_like(h), 0.5, training=True)  # same RNG draw as inside
        # Reference: base op on x plus the adapter's weight-delta op on the dropped-out x.
        delta_only = layer.effective_weight() - layer.base_weight()
        op = _reference_op(layer, kind)
        expected = op(h, layer.base_weight(), layer.base_layer.bias)
        expected = expected + op(h * mask, delta_only, None)
        no_drop = op(h, layer.effective_weight(), layer.base_layer.bias)
    assert rel_err(y_train, expected) <= 1e-5
    assert rel_err(y_eval, no_drop) <= 1e-6
    assert rel_err(y_train, y_eval) > 1e-3


def _reference_op(layer, kind):
    m = layer.base_layer
    if kind == "linear":
        return lambda x, w, b: F.linear(x, w, b)
    if kind.startswith("convT"):
        return lambda x, w, b: F.conv_transpose1d(
            x, w, b, m.stride, m.padding, m.output_padding, 1, m.dilation
        )
    return lambda x, w, b: F.conv1d(x, w, b, m.stride, m.padding, m.dilation)


def test_unload_requires_an_adapter():
    with pytest.raises(LoraError, match="inject_lora"):
        unload_lora(Decoy())


def test_conv_transpose_output_size_is_honoured():
    torch.manual_seed(0)
    model = torch.nn.Sequential(nn.ConvTranspose1d(8, 4, 4, stride=3, padding=1))
    inject_lora(model, LoraConfig(targets=["0"]))
    randomize_adapter(model)
    layer = lora_layers(model)["0"]
    x = torch.randn(2, 8, 10)
    sizes = [layer(x, output_size=[n]).shape[-1] for n in (29, 30, 31)]
    assert sizes == [29, 30, 31]
    y = layer(x, output_size=[31])
    layer.merge()
    assert rel_err(layer(x, output_size=[31]), y) <= 1e-5
