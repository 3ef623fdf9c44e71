"""Adapter file checks that mutation testing (docs/mutation.md) found unchecked: message
shortening at its edges, an adapter injected with another scale or other modules, a config
that excludes what it matched, format-1 pattern checks on either field, non-matrix factors,
and the exact messages of metadata that is not what save_adapter writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rvc_lora.lora import inject_lora, load_adapter, save_adapter
from rvc_lora.lora.config import LoraError
from rvc_lora.lora.io import _is_name, _one_line
from rvc_lora.utils.errors import CheckpointError
from tests.lora.adapter_files import assert_same_state, file_tensors, rewrite, state
from tests.lora.test_io_trust import _base, _refused, _saved
from tests.lora.tiny import config, make_model


def test_one_line_joins_lines_and_cuts_at_200_characters() -> None:
    assert _one_line(ValueError("bad\n  header\tat 3")) == "bad header at 3"
    assert _one_line(ValueError("x" * 200)) == "x" * 200
    assert _one_line(ValueError("x" * 201)) == "x" * 197 + "..."


def test_names_up_to_200_characters() -> None:
    assert _is_name("a" * 200) and not _is_name("a" * 201)
    assert _is_name("dec.ups.0") and not _is_name("dec..ups") and not _is_name(5)


def test_saving_a_model_without_adapters_says_what_to_do(tmp_path) -> None:
    with pytest.raises(LoraError) as err:
        save_adapter(make_model("linear", "plain"), tmp_path / "a.safetensors")
    assert str(err.value) == (
        "model has no LoRA adapters to save; call inject_lora(model, cfg) first"
    )
    assert not (tmp_path / "a.safetensors").exists()


def test_an_injected_model_with_another_scale_or_modules_is_refused(tmp_path) -> None:
    path = _saved(tmp_path)  # alpha 16 / rank 8 on body.0
    other_alpha = _base()
    inject_lora(other_alpha, config(alpha=12.0, extra_trainable=[r"emb\.weight"]))
    _refused(
        other_alpha,
        path,
        "scale or DoRA differs from the model's adapter on ['body.0']; inject with the file's config",
    )
    other_modules = _base()
    inject_lora(other_modules, config(targets=["post"], extra_trainable=[r"emb\.weight"]))
    _refused(
        other_modules,
        path,
        "adapter wraps other modules than this model (differences: ['body.0', 'post']); "
        "inject with the file's config",
    )


def test_a_config_that_does_not_fit_the_model_is_named(tmp_path) -> None:
    path = _saved(tmp_path)
    linear = make_model("linear", "plain")  # body.0 is a Linear: a conv adapter's A cannot fit
    _refused(
        linear,
        path,
        "shape mismatch: body.0.lora_A file [8, 24] vs model [8, 8]; was it trained with "
        "another rank or base?",
        check_base=False,
    )
    no_body = torch.nn.Sequential(torch.nn.Linear(2, 2))
    msg = _refused(no_body, path, check_base=False)
    assert msg.startswith(f"{path}: its config does not fit this model: ") and "body" in msg
    tensors, meta = file_tensors(path)
    cfg = json.loads(meta["lora_config"])
    cfg["targets"] = ["nothing"]
    moved = rewrite(path, tmp_path / "moved.safetensors", config=cfg)
    with pytest.raises(CheckpointError) as err:
        load_adapter(make_model("conv_k3_d3", "param"), moved, check_base=False)
    assert "are not targets of the file's own config; the file is damaged" in str(err.value)


def test_matched_modules_the_config_excludes_are_refused(tmp_path) -> None:
    path = _saved(tmp_path)
    cfg = json.loads(file_tensors(path)[1]["lora_config"])
    cfg["exclude"] = [r"body\.0"]
    bad = rewrite(path, tmp_path / "bad.safetensors", config=cfg)
    model = _base()
    _refused(
        model,
        bad,
        "matched modules ['body.0'] are not targets of the file's own config; the file is damaged",
    )


@pytest.mark.parametrize("field, value", [("rank_pattern", 4), ("alpha_pattern", 4.0)])
def test_format_1_ambiguity_is_checked_for_either_field_alone(field, value, tmp_path) -> None:
    path = _saved(tmp_path)
    cfg = json.loads(file_tensors(path)[1]["lora_config"])
    cfg.pop("rank_pattern")  # format 1 files may lack a field: the other is still checked
    cfg.pop("alpha_pattern")
    cfg[field] = {r"body\.0": value, "bod.*": 2 * value}
    old = rewrite(path, tmp_path / "old.safetensors", config=cfg, format_version="1")
    msg = _refused(_base(), old)
    assert f"{field} patterns ['body\\\\.0', 'bod.*'] all match 'body.0'" in msg


def test_factors_that_are_not_matrices_are_refused(tmp_path) -> None:
    path = _saved(tmp_path)
    tensors, _ = file_tensors(path)
    a = tensors["body.0.lora_A"]
    # A flattened to [r] still has r entries along dim 0 and B's second dim is r
    tensors["body.0.lora_A"] = a[:, 0].contiguous()
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=tensors)
    _refused(
        _base(),
        bad,
        f"body.0: lora_A [{a.shape[0]}] and lora_B [6, {a.shape[0]}] are not [r, in] and "
        "[out, r]; the file is damaged",
    )


def test_metadata_of_the_wrong_json_type_is_named(tmp_path) -> None:
    path = _saved(tmp_path)
    model = _base()
    before = state(model)
    listed = rewrite(path, tmp_path / "l.safetensors", lora_config="[1]")
    with pytest.raises(CheckpointError) as err:
        load_adapter(model, listed)
    assert str(err.value) == (
        f"{listed}: metadata lora_config is a JSON list, not a dict; the file is damaged or "
        "not written by save_adapter"
    )
    broken = rewrite(path, tmp_path / "b.safetensors", lora_config="{")
    with pytest.raises(CheckpointError) as err:
        load_adapter(model, broken)
    assert str(err.value) == (
        f"{broken}: metadata lora_config is not JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))"
    )
    bad_cfg = rewrite(path, tmp_path / "c.safetensors", config={"rank": 0, "targets": ["a"]})
    with pytest.raises(CheckpointError) as err:
        load_adapter(model, bad_cfg)
    assert str(err.value) == (
        f"{bad_cfg}: bad LoRA config in metadata (rank must be a positive int (e.g. 8), got 0)"
    )
    assert_same_state(model, before)


def test_unreadable_files_and_odd_names_are_named(tmp_path) -> None:
    path = _saved(tmp_path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception) as raw:  # what safetensors itself says about the cut file
        safe_open(str(cut), framework="pt")
    _refused(_base(), cut, f"not a readable .safetensors adapter ({_one_line(raw.value)})")
    tensors, _ = file_tensors(path)
    odd = "a b" + "c" * 50
    tensors[odd] = tensors.pop("emb.weight")
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=tensors)
    _refused(
        _base(),
        bad,
        f"tensor name {odd[:40]!r} is not a dotted parameter name; the file is damaged or not "
        "an adapter",
    )
    future = rewrite(path, tmp_path / "f.safetensors", format_version="9" * 30)
    _refused(
        _base(),
        future,
        f"adapter format {'9' * 20!r}, this version reads ['1', '2']; upgrade rvc-lora",
    )
