"""Content features for RVC from HuBERT/ContentVec (RVC_FACTS.md §6), without fairseq.

The network is transformers' ``HubertModel`` (+ RVC's ``final_proj``); weights come from
RVC's fairseq ``hubert_base.pt`` (read by :mod:`rvc_lora.features.fairseq_pickle`, keys mapped
per §6.4) or from an HF-format folder such as RVC ``main``'s ``assets/hubert_base/``.

Features follow RVC exactly: 16 kHz float input, no normalisation, no padding mask, 50 fps with
``T = floor((N - 400) / 320) + 1``; v1 = ``final_proj(layer 9)`` (256-d), v2 = layer 12 (768-d).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rvc_lora.features.content_rule import HOP, OUTPUT_LAYER, WINDOW
from rvc_lora.features.content_rule import check_version as _check_version
from rvc_lora.features.fairseq_layout import (
    check_hubert_size,
    fairseq_to_hf_key,
    hf_to_fairseq_key,
    hubert_config_from_fairseq,
)
from rvc_lora.features.fairseq_pickle import load_fairseq_checkpoint, to_plain
from rvc_lora.features.weights import require_weights, weights_identity
from rvc_lora.utils.atomic import atomic_path, atomic_write_text
from rvc_lora.utils.errors import CheckpointError, RvcLoraError

if TYPE_CHECKING:
    from transformers import HubertConfig

    from rvc_lora.features.fairseq_backend import FairseqContentEncoder

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_OPTIONAL_HF_KEYS = {"masked_spec_embed"}  # SpecAugment vector: never used at inference
_HOW_TO_GET = (
    "get RVC's hubert_base.pt (ContentVec) from the Hugging Face repo lj1995/VoiceConversionWebUI "
    "or run `rvc-lora download`, and point the config at it"
)


def num_frames(num_samples: int) -> int:
    """Content frames (50 fps) for ``num_samples`` at 16 kHz: ``floor((N - 400) / 320) + 1``."""
    return (num_samples - WINDOW) // HOP + 1 if num_samples >= WINDOW else 0


def upsample_features(feats: torch.Tensor) -> torch.Tensor:
    """Repeat every frame twice, 50 -> 100 fps, as RVC does (``np.repeat``/nearest x2).

    Args:
        feats: ``[B, T, D]``.
    Returns:
        ``[B, 2T, D]``.
    """
    return feats.repeat_interleave(2, dim=1)


class ContentEncoder(nn.Module):
    """HuBERT content encoder, frozen, with RVC's v1/v2 feature rule.

    Always in eval mode with ``requires_grad=False``: it is a fixed feature extractor, so
    ``train()`` on a parent module does not switch its dropout on.

    Args:
        config: transformers ``HubertConfig`` (post-LN, ``do_stable_layer_norm=False``).
        final_proj: add ``final_proj: Linear(hidden_size, classifier_proj_size)`` (needed for v1).
        source: the weight file or folder, used by :attr:`weights_hash` and in messages.
    """

    def __init__(
        self,
        config: HubertConfig,
        *,
        final_proj: bool = True,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        from transformers import HubertModel  # slow import: keep it out of package import

        super().__init__()
        if config.do_stable_layer_norm:
            raise CheckpointError(
                f"{source or 'content encoder'}: pre-LN HuBERT (do_stable_layer_norm / "
                f"layer_norm_first) is not what RVC uses; use hubert_base.pt (ContentVec)"
            )
        self.hubert = HubertModel(config)
        self.final_proj = (
            nn.Linear(config.hidden_size, config.classifier_proj_size) if final_proj else None
        )
        self.source = Path(source) if source is not None else None
        self._weights_hash: str | None = None
        self.requires_grad_(False)
        self.eval()

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_fairseq(cls, path: str | os.PathLike[str]) -> ContentEncoder:
        """Load a fairseq HuBERT checkpoint (RVC's ``hubert_base.pt``) without fairseq.

        Raises:
            CheckpointError: missing/unsafe/unreadable file, unsupported config, or weights that do
                not fit the config (every problem listed in one message).
        """
        p = require_weights(path, "content encoder")
        state = load_fairseq_checkpoint(p)
        args, cfg = state.get("args"), state.get("cfg")
        # fairseq itself prefers ``args`` when an old checkpoint has both.
        model_cfg = to_plain(args) if args is not None else (to_plain(cfg) or {}).get("model")
        weights = state.get("model")
        if not isinstance(model_cfg, dict) or not isinstance(weights, dict):
            raise CheckpointError(
                f"{p}: not a fairseq HuBERT checkpoint (needs 'cfg'['model'] or 'args', and "
                f"'model'); top-level keys: {sorted(map(str, state))}"
            )
        config = hubert_config_from_fairseq(model_cfg, weights, str(p))
        with_proj = "final_proj.weight" in weights
        # The config's sizes come from the file: check the weights against a model built on the
        # meta device (no memory) before allocating the real one.
        probe = cls._on_meta(config, with_proj, p)
        wn = probe._weight_norm_names()
        flat: dict[str, torch.Tensor] = {}
        unknown: list[str] = []
        for key, value in weights.items():
            if key == "label_embs_concat":  # cluster embeddings for the pretraining loss
                continue
            hf_key = fairseq_to_hf_key(str(key), config.feat_extract_norm, wn)
            if hf_key is None:
                unknown.append(str(key))
            elif hf_key == "masked_spec_embed" and not hasattr(probe.hubert, "masked_spec_embed"):
                continue
            else:
                flat[hf_key] = value
        name_in_file = lambda k: hf_to_fairseq_key(k, config.feat_extract_norm, wn) or k  # noqa: E731
        probe._check_flat(flat, unknown, name_in_file)
        enc = cls(config, final_proj=with_proj, source=p)
        enc._load_flat(flat, unknown, name_in_file)
        return enc

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike[str]) -> ContentEncoder:
        """Load an HF-format folder: ``config.json`` + ``model.safetensors``/``pytorch_model.bin``.

        ``final_proj`` is built when the weights hold ``final_proj.*`` (RVC ``main``'s layout).
        Weight-norm tensors may be named ``weight_g/_v`` or ``parametrizations.weight.original0/1``.
        """
        from transformers import HubertConfig

        d = require_weights(path, "content encoder")
        weight_file = next((d / n for n in _HF_WEIGHT_FILES if (d / n).is_file()), None)
        if not (d / "config.json").is_file() or weight_file is None:
            lacks = "config.json" if weight_file else " or ".join(_HF_WEIGHT_FILES)
            raise CheckpointError(
                f"{d}: HF-format content encoder folder lacks {lacks}; {_HOW_TO_GET}"
            )
        try:
            config = HubertConfig.from_json_file(str(d / "config.json"))
        except Exception as exc:  # noqa: BLE001 - bad JSON or bad values
            raise CheckpointError(f"{d / 'config.json'}: not a HuBERT config ({exc})") from None
        weights = _read_hf_weights(weight_file)
        # HubertFor* heads keep the base model under "hubert."; RVC main's model has no prefix.
        weights = {k.removeprefix("hubert."): v for k, v in weights.items()}
        proj = weights.get("final_proj.weight")
        if torch.is_tensor(proj) and proj.dim() == 2:
            config.classifier_proj_size = int(proj.shape[0])
        check_hubert_size(config, str(d / "config.json"))
        probe = cls._on_meta(config, proj is not None, d)  # shapes first, as from_fairseq
        # Weight-norm tensors under either naming -> the installed transformers' naming.
        pos = "encoder.pos_conv_embed.conv."
        g, v = probe._weight_norm_names()
        for old, new in (("weight_g", g), ("weight_v", v),
                         ("parametrizations.weight.original0", g),
                         ("parametrizations.weight.original1", v)):  # fmt: skip
            if old != new and pos + old in weights:
                weights[pos + new] = weights.pop(pos + old)
        probe._check_flat(weights, [], lambda k: k)
        enc = cls(config, final_proj=proj is not None, source=d)
        enc._load_flat(weights, [], lambda k: k)
        return enc

    @classmethod
    def _on_meta(cls, config: HubertConfig, final_proj: bool, source: Path) -> ContentEncoder:
        """The encoder ``config`` describes, on the meta device (shapes only, no memory)."""
        try:
            with torch.device("meta"):
                return cls(config, final_proj=final_proj, source=source)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - capped but inconsistent sizes fail anywhere
            first = str(exc).splitlines()[0][:120] if str(exc) else ""
            raise CheckpointError(
                f"{source}: its HuBERT config describes no buildable model "
                f"({type(exc).__name__}: {first}); the file is damaged or not a HuBERT checkpoint"
            ) from None

    def _weight_norm_names(self) -> tuple[str, str]:
        conv = self.hubert.encoder.pos_conv_embed.conv
        if hasattr(conv, "parametrizations"):  # torch.nn.utils.parametrizations.weight_norm
            return "parametrizations.weight.original0", "parametrizations.weight.original1"
        return "weight_g", "weight_v"

    def flat_state_dict(self) -> dict[str, torch.Tensor]:
        """HuBERT parameters with bare HF names plus ``final_proj.*`` (RVC ``main``'s layout)."""
        flat = dict(self.hubert.state_dict())
        if self.final_proj is not None:
            flat.update({f"final_proj.{k}": t for k, t in self.final_proj.state_dict().items()})
        return flat

    def _check_flat(self, flat: dict[str, Any], unknown: list[str], name_in_file: Any) -> None:
        """Raise unless ``flat`` fits :meth:`flat_state_dict` exactly; one error lists every
        problem. Reads only shapes, so ``self`` may live on the meta device."""
        expected = self.flat_state_dict()
        missing = [
            name_in_file(k) for k in expected if k not in flat and k not in _OPTIONAL_HF_KEYS
        ]
        unexpected = unknown + [name_in_file(k) for k in flat if k not in expected]
        bad = {k: _tensor_problem(t) for k, t in flat.items()}
        bad_tensors = [f"{name_in_file(k)} ({why})" for k, why in bad.items() if why]
        shapes = [
            f"{name_in_file(k)} {tuple(t.shape)} vs {tuple(expected[k].shape)}"
            for k, t in flat.items()
            if k in expected and not bad[k] and t.shape != expected[k].shape
        ]
        if missing or unexpected or shapes or bad_tensors:
            named = {
                "missing": missing,
                "unexpected": unexpected,
                "not float tensors": bad_tensors,
                "wrong shape (file vs config)": shapes,
            }
            parts = [f"{what}: {_few(items)}" for what, items in named.items() if items]
            raise CheckpointError(
                f"{self.source}: weights do not fit the HuBERT its config describes; "
                f"{'; '.join(parts)}"
            )

    def _load_flat(self, flat: dict[str, Any], unknown: list[str], name_in_file: Any) -> None:
        """Strictly load ``flat`` (see :meth:`flat_state_dict`); one error lists every problem."""
        self._check_flat(flat, unknown, name_in_file)
        hub = {k: t for k, t in flat.items() if not k.startswith("final_proj.")}
        self.hubert.load_state_dict(hub, strict=False)  # completeness checked above
        if self.final_proj is not None:
            proj = {k.removeprefix("final_proj."): t for k, t in flat.items() if k not in hub}
            self.final_proj.load_state_dict(proj)

    # -- saving ----------------------------------------------------------------------------
    def save_hf_dir(
        self, path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (RVC ``main``'s folder layout).

        The weight-normed positional conv is saved as ``weight_g``/``weight_v``, the names that
        older transformers, RVC ``main`` and current transformers (which renames) all accept.
        """
        from safetensors.torch import save_file

        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        g, v = self._weight_norm_names()
        pos = "encoder.pos_conv_embed.conv."
        rename = {pos + g: pos + "weight_g", pos + v: pos + "weight_v"}
        flat = {
            rename.get(k, k): t.detach().to("cpu", dtype).contiguous()
            for k, t in self.flat_state_dict().items()
        }
        with atomic_path(d / "model.safetensors") as tmp:
            save_file(flat, str(tmp), metadata={"format": "pt"})
        atomic_write_text(d / "config.json", self.hubert.config.to_json_string(use_diff=False))
        return d

    # -- features --------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return int(self.hubert.config.num_hidden_layers)

    def feature_dim(self, version: str) -> int:
        """Feature width for ``version``: ``classifier_proj_size`` (v1) or ``hidden_size`` (v2)."""
        _check_version(version)
        if version == "v1":
            return self._require_final_proj().out_features
        return int(self.hubert.config.hidden_size)

    @torch.no_grad()
    def layer_output(self, wav: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of transformer layer ``layer`` (1-based; fairseq ``output_layer``).

        Runs only the layers needed. For this post-LN model HF applies ``encoder.layer_norm``
        before the layers, so the result equals HF ``hidden_states[layer]`` and fairseq's
        ``extract_features(..., output_layer=layer)``.

        Args:
            wav: ``[B, N]`` 16 kHz mono audio in [-1, 1], ``N >= 400``; used as is (no normalising).
        Returns:
            ``[B, T, hidden_size]`` with ``T = floor((N - 400) / 320) + 1``.
        """
        if wav.dim() != 2 or wav.shape[-1] < WINDOW:
            raise ValueError(
                f"wav must be [B, N] with N >= {WINDOW} samples, got {tuple(wav.shape)}"
            )
        if not 1 <= layer <= self.num_layers:
            raise CheckpointError(
                f"{self.source or 'content encoder'}: has {self.num_layers} transformer layers, "
                f"layer {layer} was asked for (RVC v1 reads layer 9, v2 layer 12); use a 12-layer "
                f"HuBERT such as hubert_base.pt"
            )
        return self.forward_layers(wav, layer)

    def forward_layers(self, wav: torch.Tensor, layer: int) -> torch.Tensor:
        """:meth:`layer_output` without its checks and with autograd, for encoder training."""
        p = next(self.hubert.parameters())
        hub = self.hubert
        x = hub.feature_extractor(wav.to(p.device, p.dtype))  # [B, C, T]
        x = hub.feature_projection(x.transpose(1, 2))  # [B, T, C] -> [B, T, H]
        enc = hub.encoder
        x = enc.layer_norm(x + enc.pos_conv_embed(x))
        for block in enc.layers[:layer]:
            x = block(x, attention_mask=None)
        return x

    @torch.no_grad()
    def extract(self, wav: torch.Tensor, version: str = "v2") -> torch.Tensor:
        """RVC content features.

        Args:
            wav: ``[B, N]`` float 16 kHz audio, all samples valid.
            version: ``"v1"`` -> ``final_proj(layer 9)``; ``"v2"`` -> layer 12.
        Returns:
            ``[B, T, D]`` at 50 fps, ``T = floor((N - 400) / 320) + 1``, ``D = feature_dim(version)``.
        """
        _check_version(version)
        proj = self._require_final_proj() if version == "v1" else None
        x = self.layer_output(wav, OUTPUT_LAYER[version])
        return proj(x) if proj is not None else x

    def _require_final_proj(self) -> nn.Linear:
        if self.final_proj is None:
            raise CheckpointError(
                f"{self.source or 'content encoder'}: has no final_proj, so it cannot make RVC v1 "
                f"(256-d) features; use v2 or a checkpoint with final_proj (hubert_base.pt has one)"
            )
        return self.final_proj

    def train(self, mode: bool = True) -> ContentEncoder:
        """Stay in eval mode: this is a fixed feature extractor."""
        return super().train(False)

    @property
    def weights_hash(self) -> str:
        """sha256 of the source file (or of a folder's files); of the tensors if built in memory."""
        if self._weights_hash is None:
            self._weights_hash = (
                weights_identity(self.source) if self.source is not None else _sha256_tensors(self)
            )
        return self._weights_hash


def load_content_encoder(
    path: str | os.PathLike[str], backend: str = "native"
) -> ContentEncoder | FairseqContentEncoder:
    """Load the content encoder named by ``features.encoder_path`` / ``features.backend``.

    ``backend="native"``: an HF-format folder (or its weight file) ->
    :meth:`ContentEncoder.from_hf_dir`; any other file -> :meth:`ContentEncoder.from_fairseq`.
    ``backend="fairseq"``: fairseq's own model, same ``extract(wav, version)`` interface
    (:func:`rvc_lora.features.fairseq_backend.load_fairseq_encoder`; needs the ``fairseq`` extra).
    """
    if backend == "fairseq":
        from rvc_lora.features.fairseq_backend import load_fairseq_encoder

        return load_fairseq_encoder(path)
    if backend != "native":
        raise RvcLoraError(f"features.backend must be 'native' or 'fairseq', got {backend!r}")
    p = require_weights(path, "content encoder")
    if p.is_file() and p.name in _HF_WEIGHT_FILES and (p.parent / "config.json").is_file():
        p = p.parent  # the weight file of an HF folder was named instead of the folder
    return ContentEncoder.from_hf_dir(p) if p.is_dir() else ContentEncoder.from_fairseq(p)


def convert_fairseq_to_hf_dir(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> Path:
    """Convert a fairseq HuBERT checkpoint to an HF-format folder; returns ``dst``."""
    return ContentEncoder.from_fairseq(src).save_hf_dir(dst, dtype=dtype)


# -- helpers --------------------------------------------------------------------------------
def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    from rvc_lora.utils.safe_load import safe_torch_load

    weights = safe_torch_load(path)
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(weights).__name__}")
    return weights


def _tensor_problem(t: Any) -> str | None:
    """Why ``t`` cannot be a weight, or ``None``."""
    if not torch.is_tensor(t):
        return type(t).__name__
    if not t.is_floating_point():
        return str(t.dtype)
    # A zero stride makes a tensor of any size from a few stored bytes; loading it would
    # allocate what the file never paid for.
    if t.device.type != "meta" and t.numel() * t.element_size() > t.untyped_storage().nbytes():
        return f"{t.numel()} elements over {t.untyped_storage().nbytes()} stored bytes"
    return None


def _few(items: list[str], n: int = 12) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _sha256_tensors(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, t in sorted(module.state_dict().items()):
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
