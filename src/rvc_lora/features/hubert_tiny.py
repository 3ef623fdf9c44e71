"""A tiny HuBERT checkpoint in fairseq's real file layout, for the ``tiny`` preset and tests.

Same keys, config sections and pickled ``fairseq.data.dictionary.Dictionary`` as RVC's
``hubert_base.pt`` (RVC_FACTS.md §6), tiny widths, and the base model's conv kernels/strides so
the frame arithmetic is RVC's. Every tensor is moved off its initial value (random, scaled to keep
activations moderate; layer norms are not identity), so a wrong key mapping changes the output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from rvc_lora.utils.atomic import atomic_torch_save

_NUM_CLUSTERS = 500  # ContentVec "500-class" labels; + 4 fairseq special symbols = 504 rows
# (kernel, stride) of HuBERT-Base's seven conv layers (RVC_FACTS.md §6.3): 400-sample window, hop 320.
CONV_KERNEL_STRIDE = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


def tiny_hubert_state_dict(
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 12,
    heads: int = 4,
    ffn: int = 128,
    conv_dim: int = 32,
    final_dim: int = 256,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
) -> OrderedDict[str, torch.Tensor]:
    """fairseq ``HubertModel`` state dict (float32) with tiny shapes; deterministic in ``seed``."""
    if hidden % heads or hidden % conv_pos_groups:
        raise ValueError(f"hidden {hidden} must be divisible by heads and conv_pos_groups")
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        sd[f"{prefix}.weight"] = randn(n_out, n_in, std=1 / math.sqrt(n_in))
        sd[f"{prefix}.bias"] = randn(n_out, std=0.05)

    def norm(prefix: str, n: int) -> None:
        sd[f"{prefix}.weight"] = 1 + randn(n, std=0.1)
        sd[f"{prefix}.bias"] = randn(n, std=0.1)

    # fairseq registers its own parameters first, then the submodules (state_dict order).
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["label_embs_concat"] = randn(_NUM_CLUSTERS + 4, final_dim, std=0.1)
    sd["mask_emb"] = torch.rand(hidden, generator=gen)
    fx = "feature_extractor.conv_layers"
    for i, (kernel, _stride) in enumerate(CONV_KERNEL_STRIDE):
        n_in = 1 if i == 0 else conv_dim
        sd[f"{fx}.{i}.0.weight"] = randn(conv_dim, n_in, kernel, std=1 / math.sqrt(n_in * kernel))
        if i == 0:  # GroupNorm(conv_dim, conv_dim) after the first conv (extractor_mode default)
            norm(f"{fx}.0.2", conv_dim)
    linear("post_extract_proj", hidden, conv_dim)
    # Weight norm over dim=2: g [1, 1, K]; v [H, H/groups, K]. With ||v[:, :, k]|| normalised
    # away, g ~ sqrt(H / K) gives the positional conv unit-scale outputs.
    sd["encoder.pos_conv.0.weight_g"] = (
        math.sqrt(hidden / conv_pos) * (1 + randn(1, 1, conv_pos, std=0.2))
    ).abs()
    sd["encoder.pos_conv.0.weight_v"] = randn(hidden, hidden // conv_pos_groups, conv_pos)
    sd["encoder.pos_conv.0.bias"] = randn(hidden, std=0.05)
    for i in range(layers):
        pre = f"encoder.layers.{i}"
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(f"{pre}.self_attn.{name}", hidden, hidden)
        norm(f"{pre}.self_attn_layer_norm", hidden)
        linear(f"{pre}.fc1", ffn, hidden)
        linear(f"{pre}.fc2", hidden, ffn)
        norm(f"{pre}.final_layer_norm", hidden)
    norm("encoder.layer_norm", hidden)
    norm("layer_norm", conv_dim)
    linear("final_proj", final_dim, hidden)
    return sd


def write_tiny_fairseq_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 12,
    heads: int = 4,
    ffn: int = 128,
    conv_dim: int = 32,
    final_dim: int = 256,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
    dtype: torch.dtype = torch.float16,
    weights: Mapping[str, torch.Tensor] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny HuBERT checkpoint the way fairseq saves one; returns ``path``.

    The file is a ``torch.save`` dict with ``args`` (None), ``cfg`` (``model``/``task``/...
    sections), ``model`` (tensors in ``dtype``; fp16 like ``hubert_base.pt``), ``criterion``,
    ``optimizer_history``, ``task_state`` (a pickled ``fairseq.data.dictionary.Dictionary``),
    ``extra_state`` and ``last_optimizer_state``. Written atomically; the same arguments give
    the same bytes, so :attr:`ContentEncoder.weights_hash` (a cache key) is stable.

    ``weights`` (fairseq names, the shapes the other arguments give) replaces the random
    tensors, e.g. a trained encoder; ``training`` is recorded in ``cfg["optimization"]``.
    """
    sd = tiny_hubert_state_dict(
        seed=seed, hidden=hidden, layers=layers, heads=heads, ffn=ffn, conv_dim=conv_dim,
        final_dim=final_dim, conv_pos=conv_pos, conv_pos_groups=conv_pos_groups,
    )  # fmt: skip
    if weights is not None:
        wrong = sorted(set(weights) ^ set(sd)) + [
            k for k in weights if k in sd and weights[k].shape != sd[k].shape
        ]
        if wrong:
            raise ValueError(f"weights do not fit the tiny HuBERT layout: {wrong[:8]}")
        sd = OrderedDict((k, weights[k].detach().cpu().float()) for k in sd)
    sd = OrderedDict((k, v.to(dtype)) for k, v in sd.items())
    conv_spec = f"[({conv_dim},10,5)] + [({conv_dim},3,2)] * 4 + [({conv_dim},2,2)] * 2"
    model_cfg = {
        "_name": "hubert", "label_rate": 50.0, "extractor_mode": "default",
        "encoder_layers": layers, "encoder_embed_dim": hidden, "encoder_ffn_embed_dim": ffn,
        "encoder_attention_heads": heads, "activation_fn": "gelu", "layer_type": "transformer",
        "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1,
        "final_dim": final_dim, "untie_final_proj": True, "layer_norm_first": False,
        "conv_feature_layers": conv_spec, "conv_bias": False, "logit_temp": 0.1,
        "target_glu": False, "feature_grad_mult": 0.1, "mask_length": 10, "mask_prob": 0.8,
        "mask_selection": "static", "mask_other": 0.0, "no_mask_overlap": False,
        "mask_min_space": 1, "mask_channel_length": 10, "mask_channel_prob": 0.0,
        "conv_pos": conv_pos, "conv_pos_groups": conv_pos_groups,
        "latent_temp": [2.0, 0.5, 0.999995], "skip_masked": False, "skip_nomask": False,
    }  # fmt: skip
    task_cfg = {
        "_name": "hubert_pretraining", "data": "", "fine_tuning": False, "labels": ["km"],
        "label_dir": None, "label_rate": 50.0, "sample_rate": 16000, "normalize": False,
        "enable_padding": False, "max_keep_size": None, "max_sample_size": 250000,
        "min_sample_size": 32000, "single_target": False, "random_crop": True,
        "pad_audio": False,
    }  # fmt: skip
    cfg = {
        "_name": None,
        "common": {"_name": None, "fp16": dtype == torch.float16, "seed": seed},
        "model": model_cfg,
        "task": task_cfg,
        "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0},
        "optimization": {"_name": None, "max_update": 0, "lr": [0.0005], **(training or {})},
    }
    history = {
        "criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
        "lr_scheduler_state": {"_step_count": 1}, "num_updates": 0,
    }  # fmt: skip
    extra = {
        "metrics": {}, "previous_training_time": 0.0,
        "train_iterator": {"epoch": 1, "iterations_in_epoch": 0},
    }  # fmt: skip
    with _fake_fairseq_dictionary() as dictionary_cls:
        labels = dictionary_cls([str(i) for i in range(_NUM_CLUSTERS)])
        state = {
            "args": None,
            "cfg": cfg,
            "model": sd,
            "criterion": None,
            "optimizer_history": [history],
            "task_state": {"dictionaries": [labels]},
            "extra_state": extra,
            "last_optimizer_state": None,
        }
        return atomic_torch_save(state, path)


@contextlib.contextmanager
def _fake_fairseq_dictionary() -> Iterator[type]:
    """Register ``fairseq.data.dictionary.Dictionary`` (a plain class) so pickle can name it.

    pickle stores a class by module and name and checks that the module really holds it, so the
    modules must exist in ``sys.modules`` while saving; they are removed (or restored) after.
    """
    names = ("fairseq", "fairseq.data", "fairseq.data.dictionary")
    saved = {n: sys.modules.get(n) for n in names}

    class Dictionary:
        """fairseq's label dictionary, attributes only."""

        def __init__(self, words: list[str]) -> None:
            self.bos_word, self.unk_word, self.pad_word, self.eos_word = (
                "<s>",
                "<unk>",
                "<pad>",
                "</s>",
            )
            self.symbols = [self.bos_word, self.pad_word, self.eos_word, self.unk_word, *words]
            self.count = [1, 1, 1, 1] + [1] * len(words)
            self.indices: dict[str, Any] = {s: i for i, s in enumerate(self.symbols)}
            self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3
            self.nspecial = 4

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    mods = [types.ModuleType(n) for n in names]
    mods[0].data = mods[1]  # type: ignore[attr-defined]
    mods[1].dictionary = mods[2]  # type: ignore[attr-defined]
    mods[2].Dictionary = Dictionary  # type: ignore[attr-defined]
    try:
        sys.modules.update(zip(names, mods))
        yield Dictionary
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old


def ensure_tiny_encoder(features_cfg: Any) -> None:
    """Create the deterministic tiny content encoder when the config asks for it and it is absent."""
    if not features_cfg.get("create_tiny_encoder", False):
        return
    path = Path(features_cfg.encoder_path)
    if not path.exists():
        write_tiny_fairseq_checkpoint(path)
        logging.getLogger("rvc_lora").info("created the tiny content encoder at %s", path)
