"""Adapter files are untrusted input: a stripped base identity, non-finite or non-float tensors,
ranks or shapes that do not fit are refused before anything is applied, and leave the model
exactly as it was."""

from __future__ import annotations

import json

import pytest
import torch

from rvc_lora.lora import inject_lora, injection, load_adapter, lora_layers, save_adapter
from rvc_lora.utils.errors import CheckpointError
from tests.lora.adapter_files import assert_same_state, file_tensors, rewrite, state
from tests.lora.tiny import combos, config, make_model, randomize_adapter

EXTRA = [r"emb\.weight"]
IDENTITY = {"version": "v2", "sr": 40000, "f0": True}
BASE_FIX = "load the base model it was trained on (or pass check_base=False)"


def _base(kind="conv_k3_d3", flavour="param"):
    model = make_model(kind, flavour)
    for k, v in IDENTITY.items():
        setattr(model, k, v)
    return model


def _saved(tmp_path, kind="conv_k3_d3", flavour="param", **kw):
    model = _base(kind, flavour)
    inject_lora(model, config(extra_trainable=EXTRA, **kw))
    randomize_adapter(model)
    return save_adapter(model, tmp_path / "a.safetensors", dtype=torch.float32)


def _refused(model, path, message=None, **kw):
    """load_adapter raises one line of our error type naming the file, and changes nothing."""
    before, was_injected = state(model), injection(model) is not None
    with pytest.raises(CheckpointError) as err:
        load_adapter(model, path, **kw)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    if message is not None:
        assert msg == f"{path}: {message}"
    assert_same_state(model, before)
    assert (injection(model) is not None) == was_injected
    return msg


@pytest.mark.parametrize("field", ["sha256", "version", "sr", "f0"])
def test_each_identity_field_is_required(field, tmp_path):
    path = _saved(tmp_path)
    identity = json.loads(file_tensors(path)[1]["base_identity"])
    assert {k: identity[k] for k in IDENTITY} == IDENTITY
    del identity[field]
    stripped = rewrite(path, tmp_path / "s.safetensors", base_identity=json.dumps(identity))
    _refused(
        _base(),
        stripped,
        f"adapter's base identity lacks {field} (stripped, or not written by save_adapter), "
        f"so nothing ties it to a base; {BASE_FIX}",
    )
    model = _base()
    load_adapter(model, stripped, check_base=False)  # the one way round, asked for explicitly
    assert lora_layers(model)["body.0"].rank == 8


def test_empty_or_null_identity_is_refused(tmp_path):
    path = _saved(tmp_path)
    empty = rewrite(path, tmp_path / "e.safetensors", base_identity="{}")
    _refused(
        _base(),
        empty,
        f"adapter's base identity lacks sha256, version, sr, f0 "
        f"(stripped, or not written by save_adapter), so nothing ties it to a base; {BASE_FIX}",
    )
    identity = json.loads(file_tensors(path)[1]["base_identity"])
    no_hash = rewrite(
        path, tmp_path / "h.safetensors", base_identity=json.dumps({**identity, "sha256": None})
    )
    assert "lacks sha256" in _refused(_base(), no_hash)
    # null where the model knows the value: the file does not show it was trained on this base.
    null_sr = rewrite(
        path, tmp_path / "n.safetensors", base_identity=json.dumps({**identity, "sr": None})
    )
    sha = identity["sha256"][:16]
    _refused(
        _base(),
        null_sr,
        f"adapter was trained on another base (base sha256 file {sha} vs model {sha}; "
        f"sr: file None vs model 40000); {BASE_FIX}",
    )
    # A typed comparison: JSON's 1 is not f0=True.
    one = rewrite(path, tmp_path / "o.safetensors", base_identity=json.dumps({**identity, "f0": 1}))
    assert "f0: file 1 vs model True" in _refused(_base(), one)


def _models(kind="conv_k3_d3", flavour="param", **kw):
    """A plain base, and one already injected with the same config and a trained adapter."""
    injected = _base(kind, flavour)
    inject_lora(injected, config(extra_trainable=EXTRA, **kw))
    randomize_adapter(injected, seed=3)
    return [_base(kind, flavour), injected]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("body.0.lora_B", float("nan"), "tensor 'body.0.lora_B' has 1 NaN/Inf values"),
        ("body.0.lora_A", float("-inf"), "tensor 'body.0.lora_A' has 1 NaN/Inf values"),
        ("emb.weight", float("inf"), "tensor 'emb.weight' has 1 NaN/Inf values"),
    ],
)
def test_non_finite_tensors_are_refused(key, value, message, tmp_path):
    path = _saved(tmp_path)
    tensors, _ = file_tensors(path)
    tensors[key].view(-1)[3] = value
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=tensors)
    for model in _models():
        _refused(
            model,
            bad,
            f"{message}; the adapter is unusable (training diverged?): use an earlier "
            "checkpoint or retrain",
        )


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.bool, torch.uint8])
def test_non_float_tensors_are_refused(dtype, tmp_path):
    path = _saved(tmp_path)
    tensors, _ = file_tensors(path)
    tensors["body.0.lora_B"] = tensors["body.0.lora_B"].to(dtype)
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=tensors)
    for model in _models():
        _refused(
            model,
            bad,
            f"tensor 'body.0.lora_B' is {dtype}, adapter tensors are floating point "
            "(fp16/bf16/fp32); the file is damaged or not an adapter",
        )


def test_rank_is_taken_from_the_tensors_and_checked_against_the_config(tmp_path):
    path = _saved(tmp_path)
    tensors, _ = file_tensors(path)
    tensors["body.0.lora_A"] = tensors["body.0.lora_A"][:4].contiguous()
    tensors["body.0.lora_B"] = tensors["body.0.lora_B"][:, :4].contiguous()
    # Same scale alpha/r either way: only the tensors' rank disagrees with the config's 8.
    bad = rewrite(path, tmp_path / "r4.safetensors", tensors=tensors)
    for model in _models():
        _refused(model, bad, "body.0: tensors have rank 4, its config says 8; the file is damaged")
    tensors["body.0.lora_B"] = file_tensors(path)[0]["body.0.lora_B"]  # A rank 4, B rank 8
    bad = rewrite(path, tmp_path / "r48.safetensors", tensors=tensors)
    _refused(
        _base(),
        bad,
        "body.0: lora_A [4, 24] and lora_B [6, 8] are not [r, in] and [out, r]; the file is "
        "damaged",
    )


@combos
def test_a_shape_the_base_does_not_imply_leaves_the_model_bit_for_bit(kind, flavour, tmp_path):
    path = _saved(tmp_path, kind, flavour)
    tensors, _ = file_tensors(path)
    a = tensors["body.0.lora_A"]
    tensors["body.0.lora_A"] = torch.cat([a, a[:, :1]], dim=1)  # one input column too many
    bad = rewrite(path, tmp_path / "wide.safetensors", tensors=tensors)
    for model in _models(kind, flavour):
        msg = _refused(model, bad)
        assert f"shape mismatch: body.0.lora_A file {[8, a.shape[1] + 1]} vs model" in msg
        if injection(model) is not None:
            assert lora_layers(model)["body.0"].lora_A.shape == a.shape


def test_missing_and_extra_tensors_are_refused(tmp_path):
    path = _saved(tmp_path, use_dora=True)
    tensors, _ = file_tensors(path)
    del tensors["body.0.lora_magnitude"]
    tensors["post.lora_A"] = tensors["body.0.lora_A"].clone()
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=tensors)
    _refused(
        _base(),
        bad,
        "tensors do not fit the file's own config and modules (missing "
        "['body.0.lora_magnitude'], unexpected ['post.lora_A']); the file is damaged",
    )


def test_values_beyond_the_models_dtype_are_refused(tmp_path):
    path = _saved(tmp_path)
    tensors, _ = file_tensors(path)
    tensors["body.0.lora_B"].view(-1)[0] = 1e6  # finite in fp32, Inf in fp16
    big = rewrite(path, tmp_path / "big.safetensors", tensors=tensors)
    half = _base().half()
    _refused(
        half,
        big,
        "['body.0.lora_B'] overflow the model's torch.float16; load the adapter into a "
        "float32 model",
    )
    load_adapter(_base(), big)  # fine in float32
