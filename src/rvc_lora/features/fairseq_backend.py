"""``features.backend=fairseq``: RVC content features computed by fairseq's own ``HubertModel``.

For users who already run fairseq (the optional extra ``pip install -e .[fairseq]``, which
installs the maintained fork ``fairseq-fixed``). The default backend, ``native``
(:mod:`rvc_lora.features.hubert`), gives the same features without fairseq; the parity test
(``tests/features/test_fairseq_parity.py``) checks that against a fixture made by fairseq.

Safety: fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` unpickles the whole file, which
runs whatever a malicious pickle asks for once fairseq's classes are allowed. So the file is read
exactly once, by our restricted unpickler (:func:`load_fairseq_checkpoint`, which refuses code
payloads with :class:`CheckpointError`) *before* fairseq is imported. The checked data (inert
stand-ins turned back into plain containers and real ``Dictionary`` objects) is then handed to
``checkpoint_utils.load_model_ensemble_and_task(..., state=...)``, which builds the task and
model from it without reading the file again.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rvc_lora.features.content_rule import OUTPUT_LAYER
from rvc_lora.features.content_rule import check_version as _check_version
from rvc_lora.features.fairseq_pickle import FairseqObject, load_fairseq_checkpoint, to_plain
from rvc_lora.features.weights import require_weights, weights_identity
from rvc_lora.utils.errors import CheckpointError, RvcLoraError

_DICTIONARY = "fairseq.data.dictionary.Dictionary"
_STAND_IN_KEYS = {"_args", "_items", "_list", "_state"}  # FairseqObject's own bookkeeping


def fairseq_available() -> bool:
    """Whether ``import fairseq`` can work, found without importing (running) it."""
    if "fairseq" in sys.modules:  # imported already, or blocked (``None``)
        return sys.modules["fairseq"] is not None
    try:
        return importlib.util.find_spec("fairseq") is not None
    except (ImportError, ValueError):
        return False


def _require_fairseq() -> None:
    if not fairseq_available():
        raise RvcLoraError(
            "features.backend=fairseq needs fairseq, which is not installed; install the "
            "optional extra with `pip install -e .[fairseq]` or set features.backend=native"
        )


class FairseqContentEncoder(nn.Module):
    """fairseq ``HubertModel`` with the interface of :class:`~rvc_lora.features.hubert.ContentEncoder`.

    Frozen and always in eval mode. No input normalisation and no padding mask, as RVC.

    Args:
        model: a loaded fairseq ``HubertModel``.
        source: the checkpoint file (for :attr:`weights_hash` and messages).
    """

    def __init__(self, model: nn.Module, source: str | os.PathLike[str]) -> None:
        super().__init__()
        self.model = model
        self.source = Path(source)
        self._weights_hash: str | None = None
        self.requires_grad_(False)
        self.eval()

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return len(self.model.encoder.layers)

    def feature_dim(self, version: str) -> int:
        """Feature width: ``final_proj`` output (v1) or the encoder width (v2)."""
        _check_version(version)
        if version == "v1":
            return int(self.model.final_proj.out_features)
        return int(self.model.encoder.embedding_dim)

    @torch.no_grad()
    def layer_output(self, wav: torch.Tensor, layer: int) -> torch.Tensor:
        """fairseq ``extract_features(wav, output_layer=layer)``: ``[B, N]`` -> ``[B, T, H]``."""
        if wav.dim() != 2:
            raise ValueError(f"wav must be [B, N], got {tuple(wav.shape)}")
        if not 1 <= layer <= self.num_layers:
            raise CheckpointError(
                f"{self.source}: has {self.num_layers} transformer layers, layer {layer} was "
                f"asked for (RVC v1 reads layer 9, v2 layer 12); use a 12-layer HuBERT"
            )
        p = next(self.model.parameters())
        x, _ = self.model.extract_features(
            wav.to(p.device, p.dtype), padding_mask=None, mask=False, output_layer=layer
        )
        return x

    @torch.no_grad()
    def extract(self, wav: torch.Tensor, version: str = "v2") -> torch.Tensor:
        """RVC content features ``[B, T, D]`` at 50 fps: v1 = ``final_proj(layer 9)``, v2 = layer 12."""
        _check_version(version)
        x = self.layer_output(wav, OUTPUT_LAYER[version])
        return self.model.final_proj(x) if version == "v1" else x

    def train(self, mode: bool = True) -> FairseqContentEncoder:
        """Stay in eval mode: this is a fixed feature extractor."""
        return super().train(False)

    @property
    def weights_hash(self) -> str:
        """sha256 of the checkpoint file (the same cache key as the native backend's)."""
        if self._weights_hash is None:
            self._weights_hash = weights_identity(self.source)
        return self._weights_hash


def load_fairseq_encoder(path: str | os.PathLike[str]) -> FairseqContentEncoder:
    """Load a fairseq HuBERT checkpoint (RVC's ``hubert_base.pt``) with fairseq.

    Raises:
        RvcLoraError: fairseq is not installed (names the extra to install).
        CheckpointError: the file is missing, unreadable or unsafe (checked before fairseq is
            imported), or fairseq cannot build a model from it.
    """
    p = require_weights(path, "content encoder")
    if p.is_dir():
        raise CheckpointError(
            f"{p}: features.backend=fairseq needs a fairseq checkpoint file (hubert_base.pt), "
            f"not an HF-format folder; use features.backend=native for folders"
        )
    _require_fairseq()
    state = load_fairseq_checkpoint(p)  # restricted: refuses code payloads, imports nothing

    from fairseq import checkpoint_utils  # only now: the file has been checked
    from fairseq.data.dictionary import Dictionary
    from omegaconf import OmegaConf

    state = {k: _rebuild(v, Dictionary) for k, v in state.items()}
    if state.get("args") is not None:
        state["args"] = argparse.Namespace(**state["args"])
    if state.get("cfg") is not None:  # as checkpoint_utils.load_checkpoint_to_cpu does
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    upgrade = getattr(checkpoint_utils, "_upgrade_state_dict", None)
    try:
        if upgrade is not None:
            state = upgrade(state)
        models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task(
            [str(p)], suffix="", state=state
        )
    except Exception as exc:  # noqa: BLE001 - fairseq raises anything from asserts to KeyError
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{p}: fairseq could not build a model from this checkpoint ({first}); "
            f"try features.backend=native"
        ) from None
    return FairseqContentEncoder(models[0], p)


def _rebuild(obj: Any, dictionary_cls: type) -> Any:
    """Checked data -> what fairseq expects: real ``Dictionary`` objects, other stand-ins plain.

    A ``Dictionary`` is rebuilt as unpickling would (``__new__`` + instance ``__dict__``), from
    the attributes the restricted unpickler kept: plain data only.
    """
    if isinstance(obj, FairseqObject) and obj.fairseq_global == _DICTIONARY:
        d = dictionary_cls.__new__(dictionary_cls)
        attrs = {k: v for k, v in obj.__dict__.items() if k not in _STAND_IN_KEYS}
        d.__dict__.update(to_plain(attrs))
        return d
    if isinstance(obj, FairseqObject):
        return to_plain(obj)
    if isinstance(obj, dict):  # keeps OrderedDict / defaultdict types
        out = copy.copy(obj)
        out.update((k, _rebuild(v, dictionary_cls)) for k, v in obj.items())
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(v, dictionary_cls) for v in obj)
    return obj
