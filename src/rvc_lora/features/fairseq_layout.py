"""fairseq's HuBERT checkpoint layout (RVC_FACTS.md §6.4): key mapping and config translation."""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING, Any

import torch

from rvc_lora.utils.errors import CheckpointError

if TYPE_CHECKING:
    from transformers import HubertConfig


# Caps on sizes a checkpoint's config may ask for, checked before anything is built. Far above
# any HuBERT/ContentVec (X-Large: 1280 wide, 48 layers, 5120 ffn, 16 heads, conv_pos 128, seven
# 512-wide convs with kernels <= 10), far below what would exhaust memory.
MAX_SPEC_CHARS = 1000
MAX_CONV_LAYERS = 32
MAX_CONV_DIM, MAX_CONV_KERNEL = 4096, 1024
MAX_SIZES = {
    "hidden_size": 4096, "num_hidden_layers": 64, "num_attention_heads": 64,
    "intermediate_size": 16384, "num_conv_pos_embeddings": 1024,
    "num_conv_pos_embedding_groups": 1024, "classifier_proj_size": 4096,
}  # fmt: skip


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string without ``eval``.

    Accepts list/tuple literals of ints joined by ``+`` and ``* int``, e.g.
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``. Returns ``[(dim, kernel, stride)]``.
    At most :data:`MAX_SPEC_CHARS` characters and :data:`MAX_CONV_LAYERS` layers (checked before
    each list is built), dims up to :data:`MAX_CONV_DIM`, kernels/strides up to
    :data:`MAX_CONV_KERNEL`.
    """
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"spec of {len(spec)} characters (at most {MAX_SPEC_CHARS})")

    def too_long(n: int) -> ValueError:
        return ValueError(f"{n} conv layers (at most {MAX_CONV_LAYERS})")

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
                if len(left) + len(right) > MAX_CONV_LAYERS:
                    raise too_long(len(left) + len(right))
                return left + right
            if isinstance(node.op, ast.Mult) and isinstance(left, list) and type(right) is int:
                if right < 0 or len(left) * right > MAX_CONV_LAYERS:
                    raise (
                        too_long(len(left) * right) if right >= 0 else ValueError("negative repeat")
                    )
                return left * right
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
    except (RecursionError, MemoryError):
        raise ValueError("expression nested too deeply") from None
    if isinstance(layers, list) and len(layers) > MAX_CONV_LAYERS:
        raise too_long(len(layers))
    if (
        not isinstance(layers, list)
        or not layers
        or not all(
            isinstance(t, tuple)
            and len(t) == 3
            and all(type(v) is int for v in t)
            and 0 < t[0] <= MAX_CONV_DIM
            and 0 < t[1] <= MAX_CONV_KERNEL
            and 0 < t[2] <= MAX_CONV_KERNEL
            for t in layers
        )
    ):
        raise ValueError(
            f"expected a non-empty list of (dim 1..{MAX_CONV_DIM}, kernel and stride "
            f"1..{MAX_CONV_KERNEL}) int triples"
        )
    return layers


def check_hubert_size(config: HubertConfig, source: str) -> None:
    """Raise :class:`CheckpointError` if ``config`` asks for sizes beyond :data:`MAX_SIZES`
    (a file's config is checked before any model, even on the meta device, is built)."""
    over = [
        f"{name}={getattr(config, name)!r} (1..{cap})"
        for name, cap in MAX_SIZES.items()
        if not (type(getattr(config, name, None)) is int and 1 <= getattr(config, name) <= cap)
    ]
    convs = [
        list(getattr(config, n, None) or []) for n in ("conv_dim", "conv_kernel", "conv_stride")
    ]
    if not 1 <= len(convs[0]) <= MAX_CONV_LAYERS or len({len(c) for c in convs}) != 1:
        over.append(f"{len(convs[0])} conv layers (1..{MAX_CONV_LAYERS}, one kernel/stride each)")
    elif not all(
        type(v) is int and 1 <= v <= cap
        for c, cap in zip(convs, (MAX_CONV_DIM, MAX_CONV_KERNEL, MAX_CONV_KERNEL), strict=True)
        for v in c
    ):
        over.append(f"conv sizes {convs} (dims 1..{MAX_CONV_DIM}, kernels 1..{MAX_CONV_KERNEL})")
    if over:
        raise CheckpointError(
            f"{source}: HuBERT config asks for sizes no content encoder has: {', '.join(over)}; "
            f"the file is damaged or not a HuBERT checkpoint"
        )


# -- fairseq layout (RVC_FACTS.md §6.4) -----------------------------------------------------
# (fairseq key, HF key) templates: {i} a layer index, {p} weight|bias, {q} q|k|v|out, {g}/{v}
# the weight-norm names of the installed transformers. Used both ways: fairseq -> HF to load,
# HF -> fairseq to name what a checkpoint lacks.
_KEY_TABLE = [
    ("feature_extractor.conv_layers.{i}.0.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
    ("layer_norm.{p}", "feature_projection.layer_norm.{p}"),
    ("post_extract_proj.{p}", "feature_projection.projection.{p}"),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    ("encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.{g}"),
    ("encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.{v}"),
    ("encoder.layers.{i}.self_attn.{q}_proj.{p}", "encoder.layers.{i}.attention.{q}_proj.{p}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{p}", "encoder.layers.{i}.layer_norm.{p}"),
    ("encoder.layers.{i}.fc1.{p}", "encoder.layers.{i}.feed_forward.intermediate_dense.{p}"),
    ("encoder.layers.{i}.fc2.{p}", "encoder.layers.{i}.feed_forward.output_dense.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.layers.{i}.final_layer_norm.{p}"),
    ("encoder.layer_norm.{p}", "encoder.layer_norm.{p}"),
    ("mask_emb", "masked_spec_embed"),
    ("final_proj.{p}", "final_proj.{p}"),
]
# extractor_mode "default": GroupNorm is module 2 of conv block 0 only; "layer_norm": every
# block has (TransposeLast, LayerNorm, TransposeLast) as module 2.
_NORM_KEYS = {
    "group": ("feature_extractor.conv_layers.0.2.{p}", "feature_extractor.conv_layers.0.layer_norm.{p}"),
    "layer": ("feature_extractor.conv_layers.{i}.2.1.{p}", "feature_extractor.conv_layers.{i}.layer_norm.{p}"),
}  # fmt: skip
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "q": r"(?P<q>[qkv]|out)"}


def _rename(key: str, norm: str, wn: tuple[str, str], src: int) -> str | None:
    for pair in [*_KEY_TABLE, _NORM_KEYS[norm]]:
        a, b = (t.replace("{g}", wn[0]).replace("{v}", wn[1]) for t in pair)
        frm, to = (a, b) if src == 0 else (b, a)
        pattern = re.escape(frm)
        for name, group in _GROUPS.items():
            pattern = pattern.replace(re.escape("{" + name + "}"), group)
        m = re.fullmatch(pattern, key)
        if m:
            return to.format(**m.groupdict())
    return None


def fairseq_to_hf_key(key: str, norm: str, wn: tuple[str, str]) -> str | None:
    """HF name of fairseq parameter ``key`` (``None`` if unknown); ``norm``: feat_extract_norm."""
    return _rename(key, norm, wn, 0)


def hf_to_fairseq_key(key: str, norm: str, wn: tuple[str, str]) -> str | None:
    """fairseq name of HF parameter ``key`` (``None`` if it has none)."""
    return _rename(key, norm, wn, 1)


# fairseq HubertConfig defaults, for fields a saved config leaves out.
_FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_type": "transformer", "dropout": 0.1, "attention_dropout": 0.1,
    "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0, "final_dim": 0,
    "layer_norm_first": False, "conv_bias": False, "conv_pos": 128, "conv_pos_groups": 16,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "mask_prob": 0.65, "mask_length": 10,
}  # fmt: skip
# fairseq activation names -> transformers ACT2FN names (gelu_accurate is the tanh form).
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu", "swish": "swish"}


def hubert_config_from_fairseq(
    model_cfg: dict[str, Any], weights: dict[str, Any], source: str
) -> HubertConfig:
    """transformers ``HubertConfig`` for a fairseq HuBERT ``cfg.model`` (or ``args``) dict."""
    from transformers import HubertConfig

    def get(name: str) -> Any:
        value = model_cfg.get(name)
        return _FAIRSEQ_DEFAULTS[name] if value is None else value

    mode, layer_type = str(get("extractor_mode")), str(get("layer_type"))
    problems = []
    if mode not in ("default", "layer_norm"):
        problems.append(f"extractor_mode {mode!r}")
    if layer_type != "transformer":
        problems.append(f"layer_type {layer_type!r}")
    if bool(get("layer_norm_first")):
        problems.append("layer_norm_first=True (pre-LN)")
    if str(get("activation_fn")) not in _ACTIVATIONS:
        problems.append(f"activation_fn {get('activation_fn')!r}")
    try:
        conv = parse_conv_feature_layers(str(get("conv_feature_layers")))
    except (ValueError, SyntaxError) as exc:
        problems.append(f"conv_feature_layers {get('conv_feature_layers')!r} ({exc})")
        conv = []
    if problems:
        raise CheckpointError(
            f"{source}: unsupported HuBERT config: {', '.join(problems)}; RVC uses the post-LN "
            f"HuBERT-Base layout of hubert_base.pt"
        )
    proj = weights.get("final_proj.weight")
    try:  # int()/float() of odd values and transformers' own validation can fail
        hidden = int(get("encoder_embed_dim"))
        proj_size = int(proj.shape[0]) if torch.is_tensor(proj) else int(get("final_dim")) or hidden
        values = {
            "hidden_size": hidden,
            "num_hidden_layers": int(get("encoder_layers")),
            "num_attention_heads": int(get("encoder_attention_heads")),
            "intermediate_size": int(get("encoder_ffn_embed_dim")),
            "hidden_act": _ACTIVATIONS[str(get("activation_fn"))],
            "feat_extract_norm": "group" if mode == "default" else "layer",
            "conv_dim": [c[0] for c in conv],
            "conv_kernel": [c[1] for c in conv],
            "conv_stride": [c[2] for c in conv],
            "conv_bias": bool(get("conv_bias")),
            "num_conv_pos_embeddings": int(get("conv_pos")),
            "num_conv_pos_embedding_groups": int(get("conv_pos_groups")),
            "do_stable_layer_norm": False,
            "feat_proj_layer_norm": True,
            "layer_norm_eps": 1e-5,
            "hidden_dropout": float(get("dropout")),
            "attention_dropout": float(get("attention_dropout")),
            "activation_dropout": float(get("activation_dropout")),
            "feat_proj_dropout": float(get("dropout_input")),
            "layerdrop": float(get("encoder_layerdrop")),
            "mask_time_prob": float(get("mask_prob")),
            "mask_time_length": int(get("mask_length")),
            "classifier_proj_size": proj_size,
        }
        config = HubertConfig(**values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{source}: HuBERT config rejected by transformers: {exc}") from None
    check_hubert_size(config, source)
    return config
