"""Adapter files: round trip, base identity, refusals, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rvc_lora.lora import (
    LoraError,
    base_identity,
    inject_lora,
    injection,
    load_adapter,
    lora_layers,
    merge_lora,
    read_adapter,
    save_adapter,
    trainable_parameters,
)
from rvc_lora.lora import io as lora_io
from rvc_lora.utils.errors import CheckpointError
from tests.lora.adapter_files import (
    assert_same_state,
    file_tensors,
    header_length,
    rewrite,
    state,
)
from tests.lora.tiny import combos, config, make_input, make_model, randomize_adapter

EXTRA = [r"emb\.weight"]


def _trained(kind, flavour, **kw):
    model = make_model(kind, flavour)
    inject_lora(model, config(extra_trainable=EXTRA, **kw))
    randomize_adapter(model)
    with torch.no_grad():
        model.emb.weight.add_(0.5)  # an extra that "trained"
    return model


def _file_tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


@combos
@pytest.mark.parametrize("pre_inject", [True, False])
def test_round_trip_fp16_and_fp32(kind, flavour, pre_inject, tmp_path):
    src = _trained(kind, flavour)
    x, sid = make_input(kind)
    y_src = src(x, sid)
    f16, f32 = tmp_path / "a16.safetensors", tmp_path / "a32.safetensors"
    save_adapter(src, f16)
    save_adapter(src, f32, dtype=torch.float32)
    tensors, meta = _file_tensors(f16)
    assert set(tensors) == {"body.0.lora_A", "body.0.lora_B", "emb.weight"}
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert json.loads(meta["matched_modules"]) == ["body.0"]
    assert json.loads(meta["lora_config"]) == injection(src).config.to_dict()
    assert json.loads(meta["base_identity"])["sha256"] == base_identity(src)["sha256"]

    for path, exact in ((f16, False), (f32, True)):
        dst = make_model(kind, flavour)
        if pre_inject:
            inject_lora(dst, config(extra_trainable=EXTRA))
        load_adapter(dst, path)
        params = trainable_parameters(dst)
        assert all(p.dtype == torch.float32 for p in params.values())  # cast to the model's
        save_adapter(dst, tmp_path / "again.safetensors", dtype=torch.float16)
        again, _ = _file_tensors(tmp_path / "again.safetensors")
        assert all(torch.equal(again[k], tensors[k]) for k in tensors)  # bit for bit in fp16
        if exact:
            assert torch.equal(dst(x, sid), y_src)
        else:
            for k, p in trainable_parameters(src).items():
                assert torch.equal(params[k], p.detach().half().float())


@combos
def test_identity_ignores_injection_and_extras(kind, flavour):
    model = make_model(kind, flavour)
    before = base_identity(model, exclude=EXTRA)
    assert before["n_tensors"] == len(model.state_dict()) - 1
    inject_lora(model, config(extra_trainable=EXTRA))
    randomize_adapter(model)
    with torch.no_grad():
        model.emb.weight.mul_(3.0)  # a trained extra is not part of the base's identity
    assert base_identity(model) == before
    other = make_model(kind, flavour, seed=5)
    assert base_identity(other, exclude=EXTRA)["sha256"] != before["sha256"]


def test_identity_survives_fp16_rounding_and_reads_attributes():
    model = make_model("conv_k3_d3", "param")
    rounded = make_model("conv_k3_d3", "param")
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
    model.version, model.sr, model.f0 = "v2", 40000, True
    ident = base_identity(model)
    assert ident["sha256"] == base_identity(rounded)["sha256"]
    assert (ident["version"], ident["sr"], ident["f0"]) == ("v2", 40000, True)
    assert base_identity(rounded)["version"] is None


@combos
def test_other_base_is_refused(kind, flavour, tmp_path):
    path = save_adapter(_trained(kind, flavour), tmp_path / "a.safetensors")
    other = make_model(kind, flavour)
    with torch.no_grad():
        other.post.bias.add_(0.01)  # one base tensor differs, not an adapted one
    with pytest.raises(CheckpointError, match="base") as err:
        load_adapter(other, path)
    want = read_adapter(path).base_identity["sha256"][:16]
    have = base_identity(other, exclude=EXTRA)["sha256"][:16]
    assert want in str(err.value) and have in str(err.value) and want != have
    assert injection(other) is None and not lora_layers(other)  # left as it was


def test_other_version_is_named(tmp_path):
    src = _trained("linear", "plain")
    path = save_adapter(src, tmp_path / "a.safetensors", base_identity={"version": "v1"})
    with pytest.raises(CheckpointError, match="version: file 'v1' vs model 'v2'"):
        dst = make_model("linear", "plain")
        dst.version = "v2"
        load_adapter(dst, path)


def test_shape_mismatch_lists_keys(tmp_path):
    path = save_adapter(_trained("conv_k3_d3", "param"), tmp_path / "a.safetensors")
    dst = make_model("conv_k3_d3", "param")
    inject_lora(dst, config(extra_trainable=EXTRA, rank=4, alpha=8))  # same scale, other rank
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch: body\.0\.lora_A file \[8, 24\] "
        r"vs model \[4, 24\]; body\.0\.lora_B",
    ):
        load_adapter(dst, path)
    dst2 = make_model("conv_k3_d3", "param")
    inject_lora(dst2, config(extra_trainable=EXTRA, alpha=4))
    with pytest.raises(CheckpointError, match="scale"):
        load_adapter(dst2, path)


def test_other_architecture_with_check_base_off_is_a_shape_error(tmp_path):
    path = save_adapter(_trained("conv_k1", "plain"), tmp_path / "a.safetensors")
    dst = make_model("conv_k3_d3", "plain")
    with pytest.raises(CheckpointError, match="base"):
        load_adapter(dst, path)
    with pytest.raises(CheckpointError, match=r"body\.0\.lora_A file \[8, 8\] vs model \[8, 24\]"):
        load_adapter(dst, path, check_base=False)
    assert injection(dst) is None


def test_bad_files_and_merged_models(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_adapter(make_model("linear", "plain"), tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable"):
        read_adapter(junk)
    model = _trained("linear", "plain")
    merge_lora(model)
    with pytest.raises(LoraError, match="unmerge"):
        save_adapter(model, tmp_path / "m.safetensors")
    with pytest.raises(LoraError, match="inject_lora"):
        save_adapter(make_model("linear", "plain"), tmp_path / "m.safetensors")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_adapter(_trained("linear", "legacy"), tmp_path / "a.safetensors")
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lora_io, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(_trained("linear", "legacy"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


@pytest.mark.parametrize(
    "kw",
    [
        # Sorted, `bod.*` would come first and win: rank 2 (a refused load) ...
        {"rank_pattern": {r"body\.0": 4, r"bod.*": 2}, "alpha_pattern": {r"body\.0": 4.0}},
        # ... or alpha 32 instead of 4: a silently 8x larger delta.
        {"alpha_pattern": {r"body\.0": 4.0, r"bod.*": 32.0}},
    ],
    ids=["rank", "alpha"],
)
def test_overlapping_patterns_keep_their_order_through_a_file(kw, tmp_path):
    src = _trained("conv_k3_d3", "param", **kw)
    want_rank = 4 if "rank_pattern" in kw else 8
    assert lora_layers(src)["body.0"].scale == 4.0 / want_rank
    x, sid = make_input("conv_k3_d3")
    path = save_adapter(src, tmp_path / "a.safetensors", dtype=torch.float32)
    dst = make_model("conv_k3_d3", "param")
    assert load_adapter(dst, path) == injection(src).config
    layer = lora_layers(dst)["body.0"]
    assert (layer.rank, layer.scale) == (want_rank, 4.0 / want_rank)
    assert torch.equal(dst(x, sid), src(x, sid))


def _as_format_1(path, out):
    """The same adapter as the previous format wrote it: patterns as JSON objects, keys sorted."""
    cfg = json.loads(file_tensors(path)[1]["lora_config"])
    for name in ("rank_pattern", "alpha_pattern"):
        cfg[name] = dict(sorted(cfg[name]))
    return rewrite(path, out, config=cfg, format_version="1")


def test_format_1_files_load_unless_their_patterns_are_ambiguous(tmp_path):
    x, sid = make_input("conv_k3_d3")
    # Overlapping but agreeing patterns, and a pattern matching no wrapped module: order is moot.
    agree = {"rank_pattern": {r"body\.0": 4, r"bod.*": 4, "post": 2}}
    src = _trained("conv_k3_d3", "param", **agree)
    path = save_adapter(src, tmp_path / "a.safetensors", dtype=torch.float32)
    old = _as_format_1(path, tmp_path / "old.safetensors")
    assert list(json.loads(file_tensors(old)[1]["lora_config"])["rank_pattern"]) == [
        "bod.*",
        r"body\.0",
        "post",
    ]
    dst = make_model("conv_k3_d3", "param")
    cfg = load_adapter(dst, old)
    assert cfg.rank_pattern == [("bod.*", 4), (r"body\.0", 4), ("post", 2)]
    assert torch.equal(dst(x, sid), src(x, sid))

    clash = {"alpha_pattern": {r"body\.0": 4.0, r"bod.*": 32.0}}
    path = save_adapter(_trained("conv_k3_d3", "param", **clash), tmp_path / "b.safetensors")
    old = _as_format_1(path, tmp_path / "old_b.safetensors")
    dst = make_model("conv_k3_d3", "param")
    before = state(dst)
    with pytest.raises(CheckpointError) as err:
        load_adapter(dst, old)
    assert str(err.value) == (
        f"{old}: alpha_pattern patterns ['bod.*', 'body\\\\.0'] all match 'body.0' with "
        "different values, and this older file stored them sorted, so their order is lost; "
        "re-save the adapter from its training checkpoint (.ckpt) with this version"
    )
    assert_same_state(dst, before)
    assert injection(dst) is None
    # The same adapter in today's format keeps its order.
    again = load_adapter(make_model("conv_k3_d3", "param"), path)
    assert again.alpha_pattern == [(r"body\.0", 4.0), ("bod.*", 32.0)]


def test_file_is_fp16_params_plus_header(tmp_path):
    model = _trained("convT_k20_s10", "param", use_dora=True)
    path = save_adapter(model, tmp_path / "a.safetensors")
    n = sum(p.numel() for p in trainable_parameters(model).values())
    assert n == 8 * 8 + 80 * 8 + 8 + 3 * 8  # A [r, in], B [out*k, r], magnitude, emb
    # Bytes: the 8-byte length, the JSON header, then 2 bytes per parameter and nothing else.
    assert path.stat().st_size == 8 + header_length(path) + 2 * n


@pytest.mark.parametrize("where", ["tensor", "metadata"])
def test_a_changed_byte_is_refused_by_the_checksum(where, tmp_path):
    path = save_adapter(_trained("conv_k1", "plain"), tmp_path / "a.safetensors")
    data = bytearray(path.read_bytes())
    if where == "tensor":
        data[-1] ^= 0x01  # one fp16 value of the last tensor, still a finite number
    else:  # alpha 16.0 -> 36.0: valid JSON, a valid config, a 2.25x larger delta
        at = data.index(b'\\"alpha\\": 16.0')
        data[at + 11] = ord("3")
    path.write_bytes(bytes(data))
    dst = make_model("conv_k1", "plain")
    before = state(dst)
    with pytest.raises(CheckpointError) as err:
        load_adapter(dst, path)
    assert str(err.value) == (
        f"{path}: content does not match its checksum (damaged in transit or edited); "
        "download or save it again"
    )
    assert_same_state(dst, before)
