"""VoiceBank on the tiny preset: switching voices equals loading each adapter fresh, the base voice
comes back exactly, blends are exact linear combinations, merged equals unmerged."""

from __future__ import annotations

import json

import pytest
import torch

from rvc_lora.inference.voices import VoiceBank
from rvc_lora.lora import LoraConfig, inject_lora, load_adapter, lora_layers, save_adapter
from rvc_lora.models import build_synthesizer, get_preset
from rvc_lora.utils.errors import CheckpointError
from tests.conftest import synth_inputs
from tests.lora.adapter_files import file_tensors, rewrite
from tests.lora.tiny import randomize_adapter, rel_err

TINY = get_preset("tiny")
INPUTS = synth_inputs(TINY, f0=True, frames=16)
# a and b share a structure (in-place switching); c differs in targets, ranks, scale (rsLoRA,
# per-pattern rank), so switching to it re-injects and blending a with c mixes scales.
CONFIGS = {
    "a": LoraConfig(preset="decoder", rank=4, alpha=8),
    "b": LoraConfig(preset="decoder", rank=4, alpha=8),
    "c": LoraConfig(
        preset="decoder_flow", rank=2, alpha=3, use_rslora=True, rank_pattern={r"dec\.ups\.\d+": 3}
    ),
}


def make_base(seed: int = 0):
    torch.manual_seed(seed)
    model = build_synthesizer("tiny", f0=True)
    model.remove_posterior()
    return model.eval()


def infer(model) -> torch.Tensor:
    torch.manual_seed(123)  # infer draws the prior noise and the NSF excitation noise
    return model.infer(*INPUTS)[0]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("voices")
    paths = {}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        model = make_base()
        inject_lora(model, cfg)
        randomize_adapter(model, seed=10 + i, relative=0.05)
        with torch.no_grad():  # a trained speaker row too
            model.emb_g.weight.add_(0.3 * torch.randn(model.emb_g.weight.shape))
        paths[name] = save_adapter(model, out / f"{name}.safetensors")
    plain = make_base()  # no extras: its base identity covers emb_g too
    inject_lora(plain, LoraConfig(preset="decoder", rank=4, alpha=8, extra_trainable=[]))
    randomize_adapter(plain, seed=20, relative=0.05)
    paths["d"] = save_adapter(plain, out / "d.safetensors")
    other = make_base(seed=1)
    inject_lora(other, CONFIGS["a"])
    randomize_adapter(other, seed=3)
    paths["other"] = save_adapter(other, out / "other.safetensors")
    return paths


def fresh(path) -> torch.nn.Module:
    model = make_base()
    load_adapter(model, path)
    return model.eval()


@pytest.fixture(scope="module")
def bank(adapters) -> VoiceBank:
    bank = VoiceBank(make_base())
    for name in "abc":
        bank.add(name, adapters[name])
    return bank


def test_switching_equals_a_fresh_model_per_voice(bank, adapters) -> None:
    base_out = infer(make_base())
    expected = {v: infer(fresh(adapters[v])) for v in "abc"}
    emb_before = bank.model.emb_g.weight.detach().clone()
    assert bank.active is None
    for v in ["a", "b", "a", "c", "a", "b", None, "c", None, "b"]:
        out = infer(bank.use(v))
        assert bank.active == v
        assert torch.equal(out, base_out if v is None else expected[v]), v
        if v is None:
            assert torch.equal(bank.model.emb_g.weight, emb_before)
    assert not torch.equal(expected["a"], expected["b"])
    assert not torch.equal(expected["a"], base_out)


def test_same_structure_switch_is_in_place(bank) -> None:
    bank.use("a")
    layers = list(lora_layers(bank.model).values())
    bank.use("b")
    assert list(lora_layers(bank.model).values()) == layers  # same wrapper objects: no re-inject
    bank.use("c")
    assert list(lora_layers(bank.model).values()) != layers


def _manual_merge(adapters, weights: dict[str, float]) -> torch.nn.Module:
    """A plain base with W + sum(w_v * dW_v) written into each layer's (g, v) and the speaker
    table blended, computed independently of VoiceBank."""
    deltas: dict[str, torch.Tensor] = {}
    emb = torch.zeros_like(make_base().emb_g.weight)
    for v, w in weights.items():
        model = fresh(adapters[v])
        for name, layer in lora_layers(model).items():
            d = w * layer.delta_weight().detach()
            deltas[name] = deltas[name] + d if name in deltas else d
        emb += w * model.emb_g.weight.detach()
    plain = make_base()
    with torch.no_grad():
        for name, d in deltas.items():
            wn = plain.get_submodule(name).parametrizations.weight
            w_new = torch._weight_norm(wn.original1, wn.original0, 0) + d
            wn.original0.copy_(torch.norm_except_dim(w_new, 2, 0))
            wn.original1.copy_(w_new)
        plain.emb_g.weight.copy_(emb)
    return plain.eval()


def test_blend_is_exact_linear_combination(bank, adapters) -> None:
    # a (rank 4, scale 2, decoder) with c (ranks 3/2, rsLoRA scales, decoder + flow).
    bank.blend("ac1", "a", "c", 1.0)
    bank.blend("ac0", "a", "c", 0.0)
    bank.blend("ac.3", "a", "c", 0.3)
    bank.blend("ab.5", "a", "b", 0.5)
    ref_a = infer(_manual_merge(adapters, {"a": 1.0}))
    assert rel_err(infer(bank.use("ac1")), infer(fresh(adapters["a"]))) < 1e-5
    assert rel_err(infer(bank.use("ac0")), infer(fresh(adapters["c"]))) < 1e-5
    assert (
        rel_err(infer(bank.use("ac.3")), infer(_manual_merge(adapters, {"a": 0.3, "c": 0.7})))
        < 1e-5
    )
    assert (
        rel_err(infer(bank.use("ab.5")), infer(_manual_merge(adapters, {"a": 0.5, "b": 0.5})))
        < 1e-5
    )
    assert rel_err(infer(fresh(adapters["a"])), ref_a) < 1e-5  # the reference merge itself
    layer = lora_layers(bank.use("ac.3"))["dec.ups.0"]
    assert layer.rank == 4 + 3 and layer.scale == 1.0  # ranks concatenated, scales folded into B
    bank.use(None)


def test_merged_equals_unmerged(bank) -> None:
    bank.use("b")
    for v in ["a", "c"]:
        merged = bank.merged(v)
        assert not lora_layers(merged)
        assert set(merged.state_dict()) == set(make_base().state_dict())
        assert rel_err(infer(merged), infer(bank.use(v))) < 1e-5
    bank.use("b")
    bank.merged("a")
    assert bank.active == "b"  # merging a copy leaves the bank where it was
    assert torch.equal(infer(bank.merged(None)), infer(make_base()))


def test_adapter_of_another_base_is_refused(adapters) -> None:
    bank = VoiceBank(make_base())
    with pytest.raises(CheckpointError, match="base") as err:
        bank.add("x", adapters["other"])
    assert "\n" not in str(err.value)
    assert "x" not in bank


def test_names_and_errors(bank, adapters) -> None:
    with pytest.raises(ValueError, match="already"):
        bank.add("a", adapters["a"])
    with pytest.raises(ValueError, match="unknown voice"):
        bank.use("zzz")
    local = VoiceBank(make_base())
    local.add("a", adapters["a"])
    local.use("a")  # emb_g now holds a's row values; d's identity must still see the base's
    local.add("d", adapters["d"])
    assert local.active == "a"
    assert torch.equal(infer(local.use("d")), infer(fresh(adapters["d"])))
    local.use("a")
    local.remove("a")
    local.remove("d")
    assert local.active is None and local.voices == []
    assert torch.equal(infer(local.model), infer(make_base()))


@pytest.mark.parametrize("drop", [["version"], ["sr", "f0"], ["sha256", "version", "sr", "f0"]])
def test_adapter_without_base_identity_is_refused(adapters, drop, tmp_path) -> None:
    tensors, meta = file_tensors(adapters["a"])
    identity = json.loads(meta["base_identity"])
    assert (identity["version"], identity["sr"], identity["f0"]) == ("v1", 16000, True)
    stripped = tmp_path / "stripped.safetensors"
    rewrite(
        adapters["a"],
        stripped,
        base_identity=json.dumps({k: v for k, v in identity.items() if k not in drop}),
    )
    bank = VoiceBank(make_base())
    with pytest.raises(CheckpointError) as err:
        bank.add("x", stripped)
    assert str(err.value) == (
        f"{stripped}: adapter's base identity lacks {', '.join(drop)} (stripped, or not "
        "written by save_adapter), so nothing ties it to a base; add adapters trained on "
        "this bank's base model"
    )
    assert "x" not in bank and not lora_layers(bank.model)
