"""Content encoder: fairseq layout read without fairseq or code execution, RVC's v1/v2 rule."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rvc_lora.features import hubert_tiny
from rvc_lora.features.fairseq_layout import (
    fairseq_to_hf_key,
    hf_to_fairseq_key,
    parse_conv_feature_layers,
)
from rvc_lora.features.fairseq_pickle import FairseqObject, load_fairseq_checkpoint
from rvc_lora.features.hubert import (
    ContentEncoder,
    convert_fairseq_to_hf_dir,
    load_content_encoder,
    num_frames,
    upsample_features,
)
from rvc_lora.features.hubert_tiny import CONV_KERNEL_STRIDE, write_tiny_fairseq_checkpoint
from rvc_lora.utils.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "hubert_tiny.pt")


@pytest.fixture(scope="module")
def encoder(tiny_ckpt) -> ContentEncoder:
    return ContentEncoder.from_fairseq(tiny_ckpt)


def _wav(n: int, batch: int = 2) -> torch.Tensor:
    """Voiced-ish test audio: a tone per row plus a little noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(n)
    t = torch.arange(n) / 16000
    tones = torch.stack([0.4 * torch.sin(2 * math.pi * (150 + 70 * b) * t) for b in range(batch)])
    return tones + 0.05 * torch.randn(batch, n, generator=g)


def _write_edited(path, edit, **kwargs):
    """A tiny checkpoint whose saved dict went through ``edit(state)`` first (real layout)."""
    real_save = hubert_tiny.atomic_torch_save

    def save(state, p):
        return real_save(edit(state) or state, p)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hubert_tiny, "atomic_torch_save", save)
        return write_tiny_fairseq_checkpoint(path, **kwargs)


@pytest.mark.parametrize("n", [400, 16000, 16123, 48000])
def test_extract_shapes_follow_rvc_frame_math(encoder, n) -> None:
    t = (n - 400) // 320 + 1
    assert num_frames(n) == t
    v1, v2 = encoder.extract(_wav(n), "v1"), encoder.extract(_wav(n), "v2")
    assert v1.shape == (2, t, 256) and v2.shape == (2, t, 64)
    assert (encoder.feature_dim("v1"), encoder.feature_dim("v2")) == (256, 64)
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()
    up = upsample_features(v2)
    assert up.shape == (2, 2 * t, 64)
    assert torch.equal(up[:, 0::2], v2) and torch.equal(up[:, 1::2], v2)


def test_encoder_is_frozen_and_matches_hf_hidden_states(encoder) -> None:
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    wav = _wav(8000)
    hidden = encoder.hubert(wav, output_hidden_states=True).hidden_states
    # Running only the needed layers gives HF's hidden_states[L] (= fairseq output_layer=L).
    assert torch.equal(encoder.layer_output(wav, 9), hidden[9])
    assert torch.equal(encoder.extract(wav, "v2"), hidden[12])


def test_hf_folder_conversion_gives_identical_features(tiny_ckpt, encoder, tmp_path) -> None:
    from transformers import HubertModel

    out = convert_fairseq_to_hf_dir(tiny_ckpt, tmp_path / "hubert_hf")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    hf = load_content_encoder(out)
    wav = _wav(16123)
    for version in ("v1", "v2"):
        assert torch.equal(hf.extract(wav, version), encoder.extract(wav, version))
    # The folder also loads in stock transformers (which renames weight_g/_v itself).
    stock = HubertModel.from_pretrained(out).eval()
    with torch.no_grad():
        last = stock(wav, output_hidden_states=True).hidden_states[12]
    torch.testing.assert_close(last, encoder.extract(wav, "v2"), rtol=0, atol=1e-6)


def test_hf_pytorch_model_bin_with_parametrization_names(tiny_ckpt, encoder, tmp_path) -> None:
    # As transformers >= 4.4x saves it: weight norm as parametrizations.weight.original0/1.
    folder = convert_fairseq_to_hf_dir(tiny_ckpt, tmp_path / "hubert_hf")
    (folder / "model.safetensors").unlink()
    torch.save(encoder.flat_state_dict(), folder / "pytorch_model.bin")
    assert any("original0" in k for k in encoder.flat_state_dict())
    hf = load_content_encoder(folder / "pytorch_model.bin")  # the weight file routes to its folder
    assert torch.equal(hf.extract(_wav(4000), "v1"), encoder.extract(_wav(4000), "v1"))


def test_old_checkpoint_with_argparse_namespace_args(tmp_path, encoder) -> None:
    def to_args(state):
        state["args"] = argparse.Namespace(**state["cfg"]["model"], task="hubert_pretraining")
        state["cfg"] = None

    enc = ContentEncoder.from_fairseq(_write_edited(tmp_path / "old.pt", to_args))
    assert torch.equal(enc.extract(_wav(4000), "v2"), encoder.extract(_wav(4000), "v2"))


def test_layer_norm_extractor_keys_map_both_ways() -> None:
    wn = ("weight_g", "weight_v")
    fs, hf = (
        "feature_extractor.conv_layers.3.2.1.bias",
        "feature_extractor.conv_layers.3.layer_norm.bias",
    )
    assert fairseq_to_hf_key(fs, "layer", wn) == hf and hf_to_fairseq_key(hf, "layer", wn) == fs
    assert fairseq_to_hf_key(fs, "group", wn) is None
    assert fairseq_to_hf_key("encoder.pos_conv.0.weight_g", "group", ("a.b", "c")) == (
        "encoder.pos_conv_embed.conv.a.b"
    )


def test_file_needs_the_fairseq_global_and_loads_through_the_restricted_path(tiny_ckpt) -> None:
    with pytest.raises(Exception, match="fairseq"):
        torch.load(tiny_ckpt, weights_only=True)
    state = load_fairseq_checkpoint(tiny_ckpt)
    labels = state["task_state"]["dictionaries"][0]
    assert isinstance(labels, FairseqObject)
    assert labels.fairseq_global == "fairseq.data.dictionary.Dictionary"
    assert len(labels.symbols) == 504 and labels.pad_index == 1
    assert state["cfg"]["task"]["normalize"] is False
    assert state["model"]["encoder.pos_conv.0.weight_g"].dtype == torch.float16


def test_numpy_values_in_extra_state_load(tmp_path) -> None:
    # fairseq may keep e.g. the best validation loss as a numpy scalar (bytes via _codecs.encode).
    path = _write_edited(
        tmp_path / "np.pt", lambda s: s["extra_state"].update(best=np.float64(2.5))
    )
    assert load_fairseq_checkpoint(path)["extra_state"]["best"] == 2.5


class _Payload:
    """Unpickling this calls ``fn(arg)``: a stand-in for a malicious checkpoint entry."""

    def __init__(self, fn, arg: str) -> None:
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("kind", ["exec", "system"])
def test_code_payload_is_refused_and_never_runs(tmp_path, kind) -> None:
    marker = tmp_path / "pwned.txt"
    if kind == "exec":  # first entry of the checkpoint dict
        payload = _Payload(exec, f"open({str(marker)!r}, 'w').write('x')")
        path = _write_edited(tmp_path / "evil.pt", lambda s: {"payload": payload, **s})
    else:  # hidden inside the config
        payload = _Payload(os.system, f"touch {shlex.quote(str(marker))}")
        path = _write_edited(tmp_path / "evil.pt", lambda s: s["cfg"]["common"].update(x=payload))
    refused = f"{payload.fn.__module__}.{payload.fn.__name__}"  # builtins.exec / posix.system

    with pytest.raises(CheckpointError, match="refused to load") as err:
        ContentEncoder.from_fairseq(path)
    assert refused in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # The payload is live: an unrestricted load in a child process does run it.
    code = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True)
    assert marker.exists()


def _reference_layers(w: dict, wav: torch.Tensor, heads: int, upto: int) -> dict[int, torch.Tensor]:
    """fairseq HuBERT (post-LN) by hand from the fairseq state dict: {layer: [B, T, H]}."""
    w = {k: v.float() for k, v in w.items()}

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    x = wav[:, None]  # [B, 1, N]
    for i, (_kernel, stride) in enumerate(CONV_KERNEL_STRIDE):
        x = F.conv1d(x, w[f"feature_extractor.conv_layers.{i}.0.weight"], stride=stride)
        if i == 0:  # GroupNorm(C, C): every channel normalised over time on its own
            mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            gn = "feature_extractor.conv_layers.0.2"
            x = (x - mu) / torch.sqrt(var + 1e-5) * w[f"{gn}.weight"][:, None] + w[f"{gn}.bias"][
                :, None
            ]
        x = F.gelu(x)
    x = ln(x.transpose(1, 2), "layer_norm")  # [B, T, C]
    x = x @ w["post_extract_proj.weight"].T + w["post_extract_proj.bias"]  # [B, T, H]
    g, v = w["encoder.pos_conv.0.weight_g"], w["encoder.pos_conv.0.weight_v"]  # [1,1,K], [H,H/G,K]
    kernel = g * v / v.norm(dim=(0, 1), keepdim=True)  # weight norm over dim=2: a norm per tap
    groups, k = x.shape[-1] // v.shape[1], v.shape[-1]
    pos = F.conv1d(
        x.transpose(1, 2), kernel, w["encoder.pos_conv.0.bias"], padding=k // 2, groups=groups
    )
    x = ln(x + F.gelu(pos[:, :, :-1]).transpose(1, 2), "encoder.layer_norm")  # even K: drop last
    outs = {}
    for i in range(upto):
        p = f"encoder.layers.{i}"

        def lin(t, name, p=p):
            return t @ w[f"{p}.{name}.weight"].T + w[f"{p}.{name}.bias"]

        b, t, h = x.shape
        q, kk, vv = (
            lin(x, f"self_attn.{n}_proj").view(b, t, heads, -1).transpose(1, 2) for n in "qkv"
        )
        att = (
            torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(h // heads), dim=-1) @ vv
        )  # [B,h,T,d]
        x = ln(
            x + lin(att.transpose(1, 2).reshape(b, t, h), "self_attn.out_proj"),
            f"{p}.self_attn_layer_norm",
        )
        x = ln(x + lin(F.gelu(lin(x, "fc1")), "fc2"), f"{p}.final_layer_norm")
        outs[i + 1] = x
    return outs


def test_features_match_an_independent_reference(tiny_ckpt, encoder) -> None:
    state = load_fairseq_checkpoint(tiny_ckpt)
    wav = _wav(9000)
    ref = _reference_layers(
        state["model"], wav, state["cfg"]["model"]["encoder_attention_heads"], 12
    )
    proj_w, proj_b = (state["model"][f"final_proj.{n}"].float() for n in ("weight", "bias"))
    torch.testing.assert_close(encoder.extract(wav, "v2"), ref[12], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        encoder.extract(wav, "v1"), ref[9] @ proj_w.T + proj_b, rtol=0, atol=1e-5
    )


def test_missing_weights_name_the_path_and_the_download(tmp_path) -> None:
    for path in (tmp_path / "hubert_base.pt", tmp_path / "elsewhere.pt"):
        with pytest.raises(CheckpointError) as err:
            load_content_encoder(path)
        msg = str(err.value)
        assert str(path) in msg and "hubert_base.pt" in msg and "lj1995/VoiceConversionWebUI" in msg
    folder = tmp_path / "hubert_hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors or pytorch_model.bin"):
        load_content_encoder(folder)


def test_weights_that_do_not_fit_are_all_listed(tmp_path) -> None:
    def edit(state):
        sd = state["model"]
        del sd["encoder.layers.3.fc1.weight"]
        sd["encoder.layers.2.fc2.bias"] = sd["encoder.layers.2.fc2.bias"][:-1]
        sd["encoder.adapter.weight"] = sd["mask_emb"]

    with pytest.raises(CheckpointError) as err:
        ContentEncoder.from_fairseq(_write_edited(tmp_path / "bad.pt", edit))
    msg = str(err.value)
    assert "missing: encoder.layers.3.fc1.weight" in msg
    assert "unexpected: encoder.adapter.weight" in msg
    assert "encoder.layers.2.fc2.bias (63,) vs (64,)" in msg


def test_v1_needs_final_proj(tmp_path) -> None:
    def drop_proj(state):
        for k in ("final_proj.weight", "final_proj.bias"):
            del state["model"][k]

    enc = ContentEncoder.from_fairseq(_write_edited(tmp_path / "noproj.pt", drop_proj))
    assert enc.extract(_wav(4000), "v2").shape == (2, 12, 64)
    with pytest.raises(CheckpointError, match="no final_proj"):
        enc.extract(_wav(4000), "v1")


def test_too_few_layers_for_the_rvc_output_layer(tmp_path) -> None:
    enc = ContentEncoder.from_fairseq(write_tiny_fairseq_checkpoint(tmp_path / "l2.pt", layers=2))
    assert enc.layer_output(_wav(4000), 2).shape == (2, 12, 64)
    for version, layer in (("v1", 9), ("v2", 12)):
        with pytest.raises(CheckpointError, match=f"has 2 transformer layers, layer {layer}"):
            enc.extract(_wav(4000), version)


def test_weights_hash_is_the_file_sha256_and_stable(tiny_ckpt, encoder, tmp_path) -> None:
    assert encoder.weights_hash == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    again = write_tiny_fairseq_checkpoint(tmp_path / "again.pt")
    assert again.read_bytes() == tiny_ckpt.read_bytes()


def test_conv_spec_is_parsed_without_eval() -> None:
    spec = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_feature_layers(spec) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(ValueError):
        parse_conv_feature_layers("__import__('os').system('true')")
