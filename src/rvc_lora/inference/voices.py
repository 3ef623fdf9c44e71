"""Many voices on one resident base: switch LoRA adapters in place, blend them, merge one out.

A :class:`VoiceBank` holds ONE base synthesizer and N adapters (their tensors, already on the
base's device and dtype). Switching between adapters of the same structure (same wrapped
modules, ranks, scales and extra tensors) copies A/B (+ extras such as ``emb_g.weight``) into the
existing wrappers: no reload, no re-injection. Adapters of another structure are re-injected.
The base's own values of extra tensors are kept, so ``use(None)`` (the base voice) and switching
back restore them bit for bit.

Typical use::

    bank = VoiceBank(load_rvc_checkpoint("f0G40k.pth", keep_posterior=False).model)
    bank.add("alice", "alice.safetensors")
    bank.add("bob", "bob.safetensors")
    bank.blend("alice+bob", "alice", "bob", 0.5)
    audio = bank.use("alice").infer(phone, lengths, pitch, pitchf, sid)[0]
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rvc_lora.inference.mixed import ConvertItem, convert_batch, infer_mixed
from rvc_lora.lora import (
    AdapterFile,
    LoraConfig,
    LoraError,
    LoraLayer,
    base_identity,
    inject_lora,
    injection,
    lora_layers,
    read_adapter,
    trainable_parameters,
    unload_lora,
)
from rvc_lora.lora.identity import check_identity
from rvc_lora.lora.inject import rvc_param_name
from rvc_lora.models.synthesizer import InferNoise, Synthesizer
from rvc_lora.utils.errors import CheckpointError

if TYPE_CHECKING:
    from rvc_lora.inference.pipeline import ConversionPipeline

_ADAPTER_ATTRS = ("lora_A", "lora_B", "lora_magnitude")
# (module, rank, scale, dora) per wrapped module, then the sorted extra tensor names.
Structure = tuple[tuple[tuple[str, int, float, bool], ...], tuple[str, ...]]


@dataclass
class Voice:
    """One adapter held by the bank.

    Attributes:
        config: the LoRA config it was trained (or blended) with.
        matched: wrapped module names, sorted.
        tensors: adapter-file keys (``<module>.lora_A``, ..., extras by RVC name) -> tensors on
            the bank's device and dtype.
    """

    config: LoraConfig
    matched: list[str]
    tensors: dict[str, torch.Tensor]

    def scale(self, module: str) -> float:
        """The factor the wrapper applies to ``B @ A`` on ``module``."""
        return self.config.scale_for(module)

    @property
    def extras(self) -> list[str]:
        layer_keys = {f"{m}.{a}" for m in self.matched for a in _ADAPTER_ATTRS}
        return sorted(k for k in self.tensors if k not in layer_keys)

    @property
    def structure(self) -> Structure:
        layers = tuple(
            (m, int(self.tensors[f"{m}.lora_A"].shape[0]), self.scale(m), self.config.use_dora)
            for m in self.matched
        )
        return layers, tuple(self.extras)


class VoiceBank:
    """One resident base synthesizer and any number of adapters, switched without reloading.

    Args:
        base: a plain synthesizer (no adapter injected); the bank owns it from now on, puts it
            in eval mode and injects/switches adapters into it in place.
    """

    def __init__(self, base: Synthesizer) -> None:
        if injection(base) is not None or lora_layers(base):
            raise LoraError("VoiceBank needs a plain base; call unload_lora(model) first")
        self._model = base.eval()
        p = next(base.parameters())
        self._device, self._dtype = p.device, p.dtype
        self._voices: dict[str, Voice] = {}
        self._active: str | None = None
        self._structure: Structure | None = None  # of the injected wrappers, None if none
        self._params: dict[str, nn.Parameter] = {}  # adapter-file key -> parameter (injected)
        self._layers: list[LoraLayer] = []
        self._originals: dict[str, torch.Tensor] = {}  # extra name -> the base's own value
        self._identities: dict[tuple[str, ...], dict[str, Any]] = {}

    # ---- read-only views ------------------------------------------------------------------
    @property
    def model(self) -> Synthesizer:
        """The synthesizer to call; it computes as the :attr:`active` voice."""
        return self._model

    @property
    def active(self) -> str | None:
        """Name of the voice in use; None is the base model's own voice."""
        return self._active

    @property
    def voices(self) -> list[str]:
        """Names of the resident voices, in the order they were added."""
        return list(self._voices)

    def __contains__(self, name: object) -> bool:
        return name in self._voices

    # ---- adding voices --------------------------------------------------------------------
    def add(self, name: str, adapter: str | os.PathLike[str] | AdapterFile) -> None:
        """Keep an adapter resident under ``name`` (does not switch to it).

        Args:
            name: voice name (non-empty, not already in the bank).
            adapter: an adapter ``.safetensors`` path, or its :func:`read_adapter` contents.
        Raises:
            CheckpointError: unreadable file, adapter trained on another base, or tensors that
                do not fit the base's modules.
        """
        self._check_name(name)
        where = str(adapter) if not isinstance(adapter, AdapterFile) else f"voice {name!r}"
        af = adapter if isinstance(adapter, AdapterFile) else read_adapter(Path(adapter))
        self._check_base(af, where)
        self._check_fit(af, where)
        tensors = {
            k: t.to(device=self._device, dtype=self._dtype, copy=True)
            for k, t in af.tensors.items()
        }
        self._voices[name] = Voice(af.config, sorted(af.matched), tensors)

    def remove(self, name: str) -> None:
        """Drop a voice (switching to the base voice first if it is active)."""
        self._get(name)
        if self._active == name:
            self.use(None)
        del self._voices[name]

    def blend(self, name: str, a: str, b: str, weight_a: float) -> None:
        """Add voice ``name`` whose delta is exactly ``w·ΔW_a + (1−w)·ΔW_b`` on every layer.

        Ranks are concatenated: ``A = [A_a; A_b]`` and ``B = [w·s_a·B_a, (1−w)·s_b·B_b]``, with
        the blend's own scale fixed at 1 per layer (alpha = rank), so each voice's scale
        (alpha/r or alpha/sqrt(r), which may differ between the two and per layer) is folded
        into its B. Then ``B @ A = w·s_a·B_a@A_a + (1−w)·s_b·B_b@A_b``: exact up to float
        rounding, whatever the ranks. A layer adapted by one voice only gets that voice's
        weighted delta. Extras blend linearly (``w·e_a + (1−w)·e_b``), the base's value standing
        in for a voice without that extra. ``weight_a`` outside [0, 1] extrapolates.

        Raises:
            LoraError: unknown voices, a DoRA adapter (not linear in its tensors), or a
                non-finite weight.
        """
        self._check_name(name)
        va, vb = self._get(a), self._get(b)
        if va.config.use_dora or vb.config.use_dora:
            raise LoraError(
                f"blend: {a!r} or {b!r} is DoRA, whose delta is not linear in its "
                "tensors; blend plain LoRA/rsLoRA voices"
            )
        w = float(weight_a)
        if not math.isfinite(w):
            raise LoraError(f"blend: weight_a must be a finite number, got {weight_a!r}")
        tensors: dict[str, torch.Tensor] = {}
        ranks: dict[str, int] = {}
        modules = sorted(set(va.matched) | set(vb.matched))
        for m in modules:
            parts = [(v, c) for v, c in ((va, w), (vb, 1.0 - w)) if m in v.matched]
            a_cat = torch.cat([v.tensors[f"{m}.lora_A"] for v, _ in parts], dim=0)  # [ra+rb, ...]
            b_cat = torch.cat(
                [v.tensors[f"{m}.lora_B"] * (c * v.scale(m)) for v, c in parts], dim=1
            )  # [..., ra+rb]
            tensors[f"{m}.lora_A"], tensors[f"{m}.lora_B"] = a_cat, b_cat
            ranks[re.escape(m)] = int(a_cat.shape[0])
        extras = sorted(set(va.extras) | set(vb.extras))
        for e in extras:
            ea = va.tensors[e] if e in va.extras else self._base_value(e)
            eb = vb.tensors[e] if e in vb.extras else self._base_value(e)
            tensors[e] = w * ea + (1.0 - w) * eb
        config = LoraConfig(
            rank=1,
            alpha=1.0,
            targets=list(ranks),
            rank_pattern=ranks,
            alpha_pattern={p: float(r) for p, r in ranks.items()},  # scale alpha/r == 1.0
            extra_trainable=[re.escape(e) for e in extras],
        )
        self._voices[name] = Voice(config, modules, tensors)

    # ---- switching --------------------------------------------------------------------------
    @torch.no_grad()
    def use(self, name: str | None) -> Synthesizer:
        """Make ``name`` the active voice (None: the base voice); returns :attr:`model`.

        Same structure as the injected wrappers: an in-place ``copy_`` of the adapter tensors
        and extras. Otherwise the wrappers are unloaded (unmerged) and the voice's config is
        injected. The base weights are never reloaded.
        """
        if name is None:
            self._restore_extras()
            for layer in self._layers:
                layer.disable()  # the base layer's own forward: bit-exact base voice
        else:
            voice = self._get(name)
            if self._structure != voice.structure:
                self._eject()
                self._inject(voice)
            for key, t in voice.tensors.items():
                self._params[key].copy_(t)
            for layer in self._layers:
                layer.enable()
        self._active = name
        return self._model

    @contextlib.contextmanager
    def keep_active(self) -> Iterator[None]:
        """Switch voices freely inside the block; the active voice is back afterwards."""
        before = self._active
        try:
            yield
        finally:
            self.use(before)

    def merged(self, name: str | None) -> Synthesizer:
        """A deep copy of the base with voice ``name`` merged in and the wrappers unloaded.

        The copy has RVC's exact key set (ready for ``export_rvc_model``) and skips the LoRA
        branch at inference. The bank itself is left on its active voice. Costs one model's
        memory.
        """
        with self.keep_active():
            model = copy.deepcopy(self.use(name))
        if lora_layers(model):
            unload_lora(model, merge=name is not None)
        return model.eval()

    # ---- mixed-voice batches ------------------------------------------------------------------
    def infer_mixed(
        self,
        phone: torch.Tensor,
        lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor | None,
        voices: Sequence[str | None],
        noise: InferNoise | None = None,
    ):
        """``Synthesizer.infer`` over a padded batch, row i converted with ``voices[i]`` (None:
        the base), in one forward: each adapted layer adds every row's own low-rank branch
        (:mod:`rvc_lora.lora.batched`). A row's output does not depend on the other rows; samples
        past its length are zeros. DoRA voices are refused (convert them with :meth:`use`)."""
        return infer_mixed(self, phone, lengths, pitch, pitchf, sid, voices, noise)

    def convert_batch(
        self,
        pipeline: ConversionPipeline,
        items: Sequence[ConvertItem | tuple],
        max_rows: int = 8,
        strategy: str = "auto",
    ) -> list[tuple[np.ndarray, int]]:
        """Convert ``items`` (:class:`~rvc_lora.inference.mixed.ConvertItem` or ``(audio16k,
        voice, options[, index])``); each result equals ``pipeline.convert(self.merged(voice),
        ...)`` within float rounding. ``strategy``: ``rows`` synthesizes ``max_rows`` chunks per
        mixed batch, ``voices`` one chunk at a time voice by voice, ``auto`` the first on CUDA
        and the second elsewhere (faster on a CPU)."""
        return convert_batch(self, pipeline, items, max_rows, strategy)

    # ---- internals ---------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise LoraError(f"voice name must be a non-empty string, got {name!r}")
        if name in self._voices:
            raise LoraError(f"voice {name!r} is already in the bank; remove({name!r}) first")

    def _get(self, name: str) -> Voice:
        if name not in self._voices:
            raise LoraError(f"unknown voice {name!r}; the bank holds {self.voices}")
        return self._voices[name]

    def _extra_param(self, name: str) -> nn.Parameter:
        for path, p in self._model.named_parameters():
            if rvc_param_name(path) == name:
                return p
        raise CheckpointError(f"extra tensor {name!r} is not a parameter of the base")

    def _base_value(self, name: str) -> torch.Tensor:
        if name in self._originals:
            return self._originals[name]
        return self._extra_param(name).detach().clone()  # never overwritten: still the base's

    def _inject(self, voice: Voice) -> None:
        inject_lora(self._model, voice.config)
        self._model.eval()  # new wrappers start in training mode (dropout)
        self._params = trainable_parameters(self._model)
        self._layers = list(lora_layers(self._model).values())
        for e in voice.extras:  # still the base's values: _eject restored them
            self._originals.setdefault(e, self._params[e].detach().clone())
        self._structure = voice.structure

    def _eject(self) -> None:
        if self._structure is None:
            return
        self._restore_extras()
        unload_lora(self._model, merge=False)
        self._params, self._layers, self._structure = {}, [], None

    @torch.no_grad()
    def _restore_extras(self) -> None:
        for e, value in self._originals.items():
            p = self._params.get(e)
            (p if p is not None else self._extra_param(e)).copy_(value)

    @contextlib.contextmanager
    def _pristine(self) -> Iterator[None]:
        # The base's own extras in place, for hashing; the active voice's values come back after.
        active = self._active
        self._restore_extras()
        try:
            yield
        finally:
            if active is not None:
                self.use(active)

    def _identity(self, exclude: list[str]) -> dict[str, Any]:
        key = tuple(sorted(exclude))
        if key not in self._identities:
            info = injection(self._model)
            if info is not None and not set(info.config.extra_trainable) <= set(key):
                # base_identity would also leave out the injected voice's extras: hash plainly.
                active = self._active
                self._eject()
                self._identities[key] = base_identity(self._model, exclude=key)
                self.use(active)
            else:
                with self._pristine():
                    self._identities[key] = base_identity(self._model, exclude=key)
        return self._identities[key]

    def _check_base(self, af: AdapterFile, where: str) -> None:
        mine = self._identity(list(af.config.extra_trainable))
        check_identity(
            af.base_identity, mine, where, "add adapters trained on this bank's base model"
        )

    def _check_fit(self, af: AdapterFile, where: str) -> None:
        expected: dict[str, tuple[int, ...]] = {}
        for m in af.matched:
            try:
                module = self._model.get_submodule(m)
            except AttributeError:
                raise CheckpointError(
                    f"{where}: adapter wraps {m!r}, not a module of the base"
                ) from None
            if isinstance(module, LoraLayer):
                module = module.base_layer
            expected.update(_adapter_shapes(m, module, af.config))
        layer_keys = {f"{m}.{a}" for m in af.matched for a in _ADAPTER_ATTRS}
        for e in (k for k in af.tensors if k not in layer_keys):
            expected[e] = tuple(self._extra_param(e).shape)
        got = {k: tuple(t.shape) for k, t in af.tensors.items()}
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        shaped = [
            f"{k} {got[k]}!={expected[k]}" for k in expected if k in got and got[k] != expected[k]
        ]
        if missing or unexpected or shaped:
            raise CheckpointError(
                f"{where}: adapter tensors do not fit the base (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shape {shaped[:3]})"
            )


def _adapter_shapes(name: str, module: nn.Module, cfg: LoraConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of A/B (+ DoRA magnitude) for ``module``, as ``lora.layers`` lays them out."""
    r = cfg.rank_for(name)
    w = tuple(module.weight.shape)
    if isinstance(module, nn.ConvTranspose1d):  # [in, out, k]: A faces the input
        a, b = (r, w[0]), (w[1] * w[2], r)
    elif isinstance(module, nn.Conv1d):  # [out, in, k]
        a, b = (r, w[1] * w[2]), (w[0], r)
    elif isinstance(module, nn.Linear):  # [out, in]
        a, b = (r, w[1]), (w[0], r)
    else:
        raise CheckpointError(
            f"adapter wraps {name!r}, a {type(module).__name__}, which LoRA does not support"
        )
    shapes = {f"{name}.lora_A": a, f"{name}.lora_B": b}
    if cfg.use_dora:  # one magnitude per weight-norm channel (dim 0 in RVC's layers)
        shapes[f"{name}.lora_magnitude"] = (w[0],)
    return shapes


__all__ = ["Voice", "VoiceBank"]
