"""Fuzz the adapter ``.safetensors`` reader: a damaged or crafted file gives ONE line of our error
type naming the file, and leaves the model, the file and its folder exactly as they were.

Crafted cases recompute the content checksum (as an attacker would) so that the checks behind
it are reached; random byte damage keeps the checksum and must be caught by it or before it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from rvc_lora.lora import inject_lora, injection, load_adapter, save_adapter
from rvc_lora.lora.io import content_sha256
from rvc_lora.utils.errors import CheckpointError, RvcLoraError
from tests.lora.adapter_files import (
    assert_same_state,
    file_tensors,
    header_length,
    rewrite,
    state,
)
from tests.lora.tiny import config, make_model, randomize_adapter

KIND, FLAVOUR = "conv_k3_d3", "legacy"  # RVC's weight-norm flavour, a kernel with dilation
CFG = {"extra_trainable": [r"emb\.weight"], "rank_pattern": {r"body\.0": 4}, "alpha": 8}
IDENTITY = {"version": "v2", "sr": 40000, "f0": True}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _base() -> torch.nn.Module:
    model = make_model(KIND, FLAVOUR)
    for k, v in IDENTITY.items():
        setattr(model, k, v)
    return model


def _models() -> list[torch.nn.Module]:
    """A plain base (the load injects, then must undo it) and one already injected."""
    injected = _base()
    inject_lora(injected, config(**CFG))
    randomize_adapter(injected, seed=9)
    return [_base(), injected]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    model = _base()
    inject_lora(model, config(**CFG))
    randomize_adapter(model)
    path = save_adapter(model, tmp_path_factory.mktemp("valid") / "a.safetensors")
    load_adapter(_base(), path)  # the file every case damages loads as it is
    return path


def _folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_refused(path: Path, models: list[torch.nn.Module] | None = None) -> str:
    """Every model refuses ``path`` with one line naming it; nothing changes anywhere."""
    folder = _folder_snapshot(path.parent)
    message = ""
    for model in models if models is not None else _models():
        before, was_injected = state(model), injection(model) is not None
        with pytest.raises(RvcLoraError) as err:
            load_adapter(model, path)
        assert type(err.value) is CheckpointError
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 500
        # Raised by us, not propagated: no chained traceback from safetensors, json or torch.
        assert err.value.__cause__ is None
        assert err.value.__context__ is None or err.value.__suppress_context__
        assert_same_state(model, before)
        assert (injection(model) is not None) == was_injected
    assert _folder_snapshot(path.parent) == folder  # nothing written, nothing left behind
    return message


def _damaged(valid: Path, tmp_path: Path, data: bytes) -> Path:
    out = tmp_path / "bad.safetensors"
    out.write_bytes(data)
    return out


# ---- byte-level damage ---------------------------------------------------------------------
def _cuts(valid: Path) -> list[int]:
    size, head = valid.stat().st_size, 8 + header_length(valid)
    return [0, 1, 4, 7, 8, 9, 16, head - 1, head, head + 1, head + 2, size // 2, size - 2, size - 1]


@pytest.mark.parametrize("cut_index", range(14))
def test_truncated(valid, tmp_path, cut_index):
    cut = _cuts(valid)[cut_index]
    assert_refused(_damaged(valid, tmp_path, valid.read_bytes()[:cut]))


@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_anywhere(valid, tmp_path, fraction):
    data = valid.read_bytes()
    assert_refused(_damaged(valid, tmp_path, data[: int(fraction * len(data))]), [_base()])


def _one_flip(valid: Path, tmp_path: Path, where: int, xor: int) -> None:
    data = bytearray(valid.read_bytes())
    data[where] ^= xor
    path = _damaged(valid, tmp_path, bytes(data))
    model = _base()
    try:
        load_adapter(model, path)
    except RvcLoraError:
        refused = True
    else:
        refused = False
    if refused:
        assert_refused(path, [_base()])
        return
    # It loaded: only a flip that means nothing may (whitespace to whitespace in the JSON
    # header's padding), and then the model is exactly what the intact file gives.
    assert chr(data[where]) in " \t\r\n" and chr(data[where] ^ xor) in " \t\r\n"
    want = _base()
    load_adapter(want, valid)
    assert_same_state(model, state(want))


@FUZZ
@given(offset=st.integers(0, 10**6), xor=st.integers(1, 255))
def test_header_byte_flipped(valid, tmp_path, offset, xor):
    _one_flip(valid, tmp_path, 8 + offset % header_length(valid), xor)


@FUZZ
@given(offset=st.integers(0, 10**6), xor=st.integers(1, 255))
def test_tensor_byte_flipped(valid, tmp_path, offset, xor):
    head = 8 + header_length(valid)
    _one_flip(valid, tmp_path, head + offset % (valid.stat().st_size - head), xor)


LENGTHS = {  # (header length, file size) -> the length field written instead
    "minus_1": lambda h, n: h - 1,
    "plus_1": lambda h, n: h + 1,
    "plus_8": lambda h, n: h + 8,
    "zero": lambda h, n: 0,
    "one": lambda h, n: 1,
    "2^63": lambda h, n: 2**63,
    "2^64-1": lambda h, n: 2**64 - 1,
    "file_size": lambda h, n: n,
    "file_size_minus_7": lambda h, n: n - 7,
}


@pytest.mark.parametrize("length", LENGTHS)
def test_header_length_field_wrong(valid, tmp_path, length):
    data = valid.read_bytes()
    value = LENGTHS[length](header_length(valid), len(data))
    assert_refused(_damaged(valid, tmp_path, struct.pack("<Q", value) + data[8:]))


# ---- crafted content (checksum recomputed) ---------------------------------------------------
NOT_JSON = ["", "{", "nan garbage", "[" * 100_000, "\x00", '{"a": 1} trailing']
WRONG_KIND = {"lora_config": "[]", "matched_modules": '"body.0"', "base_identity": "[1, 2]"}


@pytest.mark.parametrize("key", ["lora_config", "matched_modules", "base_identity"])
@pytest.mark.parametrize("text", NOT_JSON, ids=["empty", "open", "garbage", "deep", "nul", "tail"])
def test_metadata_not_json(valid, tmp_path, key, text):
    message = assert_refused(rewrite(valid, tmp_path / "bad.safetensors", **{key: text}))
    assert f"metadata {key} is not JSON" in message


@pytest.mark.parametrize("key", WRONG_KIND)
def test_metadata_json_of_the_wrong_kind(valid, tmp_path, key):
    bad = rewrite(valid, tmp_path / "bad.safetensors", **{key: WRONG_KIND[key]})
    assert f"metadata {key} is a JSON" in assert_refused(bad)


CONFIG_CHANGES = {
    "rank_string": {"rank": "8"},
    "rank_negative": {"rank": -8},
    "rank_zero": {"rank": 0},
    "rank_float": {"rank": 8.5},
    "rank_bool": {"rank": True},
    "rank_huge": {"rank": 10**30, "rank_pattern": []},
    "alpha_nan": {"alpha": float("nan")},
    "alpha_inf": {"alpha": float("inf")},
    "alpha_string": {"alpha": "8"},
    "dropout_2": {"dropout": 2.0},
    "dora_string": {"use_dora": "yes"},
    "targets_string": {"targets": "body"},
    "targets_ints": {"targets": [1]},
    "targets_none": {"targets": None},
    "targets_other": {"targets": [r"post"]},
    "targets_bad_regex": {"targets": ["body\\.(0"]},
    "targets_hang": {"targets": ["((.|.)*)*X", "body\\.0"]},  # would never finish matching
    "targets_slow": {"targets": [".*" * 12 + "X", "body\\.0"]},
    "targets_many": {"targets": ["body\\.0"] * 100_000},
    "exclude_mapping": {"exclude": {"a": 1}},
    "patterns_string": {"rank_pattern": "body"},
    "patterns_not_pairs": {"rank_pattern": [["body\\.0"]]},
    "patterns_bad_regex": {"rank_pattern": [["(", 4]]},
    "patterns_swapped": {"alpha_pattern": [[8.0, "body\\.0"]]},
    "patterns_other_rank": {"rank_pattern": [["body\\.0", 2]]},
    "extras_number": {"extra_trainable": 5},
    "extras_none_left": {"extra_trainable": []},
    "preset_number": {"preset": 3},
    "unknown_key": {"lr": 1e-4},
    "rank_mismatch": {"rank_pattern": [], "rank": 8},
}


@pytest.mark.parametrize("change", CONFIG_CHANGES)
def test_wrong_config(valid, tmp_path, change):
    cfg = {**json.loads(file_tensors(valid)[1]["lora_config"]), **CONFIG_CHANGES[change]}
    assert_refused(rewrite(valid, tmp_path / "bad.safetensors", config=cfg))


MATCHED = {
    "ints": "[1]",
    "twice": '["body.0", "body.0"]',
    "none": "[]",
    "other": '["post"]',
    "newline": '["body.0\\n"]',
}


@pytest.mark.parametrize("matched", MATCHED)
def test_wrong_matched_modules(valid, tmp_path, matched):
    assert_refused(rewrite(valid, tmp_path / "bad.safetensors", matched_modules=MATCHED[matched]))


@pytest.mark.parametrize("key", ["body.0.lora_A", "body.0.lora_B", "emb.weight"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_tensor(valid, tmp_path, key, value):
    tensors = file_tensors(valid)[0]
    tensors[key].view(-1)[-1] = value
    message = assert_refused(rewrite(valid, tmp_path / "bad.safetensors", tensors=tensors))
    assert "NaN/Inf" in message


TENSOR_CHANGES = {
    "no_A": lambda t: t.pop("body.0.lora_A"),
    "no_B": lambda t: t.pop("body.0.lora_B"),
    "no_extra": lambda t: t.pop("emb.weight"),
    "extra_layer": lambda t: t.update({"post.lora_A": torch.zeros(4, 6, dtype=torch.float16)}),
    "extra_junk": lambda t: t.update({"junk": torch.zeros(1, dtype=torch.float16)}),
    "magnitude": lambda t: t.update({"body.0.lora_magnitude": torch.ones(6, dtype=torch.float16)}),
    "A_rank_3": lambda t: t.update({"body.0.lora_A": t["body.0.lora_A"][:3].clone()}),
    "both_rank_3": lambda t: t.update(
        {
            "body.0.lora_A": t["body.0.lora_A"][:3].clone(),
            "body.0.lora_B": t["body.0.lora_B"][:, :3].clone(),
        }
    ),
    "A_wider": lambda t: t.update({"body.0.lora_A": torch.zeros(4, 25, dtype=torch.float16)}),
    "A_3d": lambda t: t.update({"body.0.lora_A": t["body.0.lora_A"][None].clone()}),
    "extra_shape": lambda t: t.update({"emb.weight": torch.zeros(4, 8, dtype=torch.float16)}),
    "empty": lambda t: t.clear(),
    "name_newline": lambda t: t.update({"emb.weight\nx": t.pop("emb.weight")}),
    "name_long": lambda t: t.update({"emb." + "w" * 10_000: t.pop("emb.weight")}),
}


@pytest.mark.parametrize("change", TENSOR_CHANGES)
def test_missing_extra_or_misshapen_tensor(valid, tmp_path, change):
    tensors = file_tensors(valid)[0]
    TENSOR_CHANGES[change](tensors)
    assert_refused(rewrite(valid, tmp_path / "bad.safetensors", tensors=tensors))


DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]
DTYPES += [torch.float8_e4m3fn, torch.float8_e5m2]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("key", ["body.0.lora_B", "emb.weight"])
def test_wrong_dtype(valid, tmp_path, dtype, key):
    tensors = file_tensors(valid)[0]
    tensors[key] = tensors[key].to(dtype)
    message = assert_refused(rewrite(valid, tmp_path / "bad.safetensors", tensors=tensors))
    assert f"tensor {key!r} is {dtype}" in message


META_CHANGES = {
    "no_format": {"format_version": None},
    "no_config": {"lora_config": None},
    "no_matched": {"matched_modules": None},
    "no_identity": {"base_identity": None},
    "format_3": {"format_version": "3"},
    "format_empty": {"format_version": ""},
    "identity_empty": {"base_identity": "{}"},
    "identity_sha_number": {"base_identity": '{"sha256": 5, "version": "v2", "sr": 1, "f0": true}'},
}


@pytest.mark.parametrize("change", META_CHANGES)
def test_wrong_metadata(valid, tmp_path, change):
    tensors, meta = file_tensors(valid)
    meta = {k: v for k, v in {**meta, **META_CHANGES[change]}.items() if v is not None}
    if all(
        k in meta for k in ("format_version", "lora_config", "matched_modules", "base_identity")
    ):
        meta["content_sha256"] = content_sha256(tensors, meta)  # as a crafter would
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    assert_refused(tmp_path / "bad.safetensors")


def test_checksum_missing_or_stale(valid, tmp_path):
    tensors, meta = file_tensors(valid)
    out = tmp_path / "bad.safetensors"
    save_file(tensors, str(out), metadata={k: v for k, v in meta.items() if k != "content_sha256"})
    assert "checksum" in assert_refused(out)
    tensors["body.0.lora_B"].mul_(2)  # finite, right shape: only the checksum can tell
    rewrite(valid, out, tensors=tensors, checksum=False)
    assert "checksum" in assert_refused(out)
