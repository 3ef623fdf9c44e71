"""Read RVC's checkpoint formats into our models, checking every key and shape.

Formats (RVC_FACTS.md §5):
- pretrained base / training checkpoint: ``{"model": state, ...}`` with ``enc_q`` (fp16 or fp32);
- exported inference model: ``{"weight", "config", "info", "sr", "f0", "version"}``, no ``enc_q``;
- a bare generator state dict.
The file never says which preset it is, so the preset is found by matching the state dict's
shapes against each preset's (on the meta device: no memory is allocated for the candidates).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rvc_lora.models.discriminator import PERIODS, MultiPeriodDiscriminator, build_discriminator
from rvc_lora.models.presets import PRESETS, SynthConfig
from rvc_lora.models.synthesizer import Synthesizer
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

_MAX_LISTED = 6


@dataclass
class LoadedCheckpoint:
    """A model read from an RVC file, with what the file said about it."""

    model: Synthesizer
    kind: str  # "pretrained" | "inference" | "state_dict"
    version: str
    sr: int
    f0: bool
    preset: str | None
    path: Path
    info: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> SynthConfig:
        return self.model.config


def expected_state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``module.state_dict()`` (RVC names: ``weight_g``/``weight_v``)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return f"{len(keys)} ({shown}{', …' if len(keys) > _MAX_LISTED else ''})"


def state_mismatches(
    expected: Mapping[str, tuple[int, ...]],
    state: Mapping[str, torch.Tensor],
    allow_missing: tuple[str, ...] = (),
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys; missing keys under ``allow_missing`` prefixes pass."""
    missing = [k for k in expected if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f"{k} {tuple(state[k].shape)}!={expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, shaped


def load_state_strict(
    module: nn.Module,
    state: Mapping[str, Any],
    *,
    allow_missing: tuple[str, ...] = (),
    source: str = "state dict",
) -> None:
    """Load ``state`` into ``module`` only if every key and shape fits.

    Args:
        allow_missing: key prefixes the caller knows may be absent (e.g. ``("enc_q.",)``);
            those parameters keep their current values.
        source: what to call the state in the error (usually the file path).
    Raises:
        CheckpointError: one message listing missing, unexpected and mis-shaped keys.
    """
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise CheckpointError(f"{source}: entries that are not tensors: {_listing(bad_values)}")
    missing, unexpected, shaped = state_mismatches(
        expected_state_shapes(module), state, allow_missing
    )
    if missing or unexpected or shaped:
        parts = [
            f"{label} {_listing(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shaped),
            )
            if keys
        ]
        raise CheckpointError(
            f"{source}: does not fit {type(module).__name__}: {'; '.join(parts)}. "
            f"Check that the file is an RVC model of this version/sample rate/F0 kind"
        )
    module.load_state_dict(dict(state), strict=False)


@functools.lru_cache(maxsize=64)
def _meta_shapes(config: SynthConfig, f0: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return expected_state_shapes(Synthesizer(config, f0=f0))


def _match_preset(state: Mapping[str, torch.Tensor], source: str) -> tuple[str, SynthConfig, bool]:
    """Find the preset (and F0 kind) whose generator shapes equal ``state``'s."""
    if "emb_g.weight" not in state or "enc_p.emb_phone.weight" not in state:
        raise CheckpointError(
            f"{source}: not an RVC generator (no emb_g.weight / enc_p.emb_phone.weight); "
            f"if it is a discriminator use load_rvc_discriminator"
        )
    f0 = "dec.m_source.l_linear.weight" in state
    n_spk = int(state["emb_g.weight"].shape[0])
    has_enc_q = any(k.startswith("enc_q.") for k in state)
    allow = () if has_enc_q else ("enc_q.",)
    best: tuple[int, str, list[str]] | None = None
    for name, preset in PRESETS.items():
        config = preset.replace(spk_embed_dim=n_spk)
        missing, unexpected, shaped = state_mismatches(_meta_shapes(config, f0), state, allow)
        errors = missing + unexpected + shaped
        if not errors:
            return name, config, f0
        if best is None or len(errors) < best[0]:
            best = (len(errors), name, errors)
    assert best is not None
    raise CheckpointError(
        f"{source}: matches no known RVC preset ({', '.join(PRESETS)}); closest is {best[1]} "
        f"with {best[0]} differing keys, e.g. {', '.join(best[2][:3])}"
    )


def _sr_from_field(value: Any) -> int:
    if isinstance(value, str):
        return int(value.lower().rstrip("k")) * 1000
    return int(value)


def load_rvc_checkpoint(
    path: str | os.PathLike[str], *, keep_posterior: bool = True
) -> LoadedCheckpoint:
    """Build the right synthesizer for an RVC file and load its weights strictly.

    Args:
        path: a pretrained base (``f0G40k.pth``), a training ``G_*.pth``, an exported inference
            ``.pth`` or a bare state dict. Loaded with ``weights_only=True``: code in the pickle
            is refused, never run.
        keep_posterior: for files with ``enc_q``, keep it (training). Exported models never have
            it, and come back with ``model.enc_q = None``.
    Returns:
        :class:`LoadedCheckpoint` with the model in eval mode (float32, CPU).
    """
    path = Path(path)
    obj = safe_torch_load(path)
    source = str(path)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{source}: expected a dict of RVC model data, got {type(obj).__name__}"
        )
    if "weight" in obj and "config" in obj:
        state, kind = obj["weight"], "inference"
        version = str(obj.get("version", "v1"))  # old v1-era exports lack these fields
        f0 = bool(int(obj.get("f0", 1)))
        if not isinstance(state, dict) or "emb_g.weight" not in state:
            raise CheckpointError(f"{source}: 'weight' holds no RVC generator (no emb_g.weight)")
        try:
            # RVC sizes the speaker table from the weights, not from config[-3] (§5.3).
            config = SynthConfig.from_rvc_list(
                list(obj["config"]), version, spk_embed_dim=int(state["emb_g.weight"].shape[0])
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"{source}: unreadable RVC 'config' list ({exc})") from None
        preset = next(
            (
                n
                for n, p in PRESETS.items()
                if p.replace(
                    spk_embed_dim=config.spk_embed_dim,
                    segment_size=config.segment_size,
                    n_mels=config.n_mels,
                )
                == config
            ),
            None,
        )
        if preset is not None:
            config = config.replace(
                segment_size=PRESETS[preset].segment_size, n_mels=PRESETS[preset].n_mels
            )
        info = str(obj.get("info", ""))
        extras = {k: v for k, v in obj.items() if k not in ("weight", "config")}
    else:
        if "model" in obj and isinstance(obj["model"], dict):
            state, kind = obj["model"], "pretrained"
            extras = {k: v for k, v in obj.items() if k not in ("model", "optimizer")}
        elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state, kind, extras = obj, "state_dict", {}
        else:
            raise CheckpointError(
                f"{source}: unknown layout (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
                f"expected an RVC pretrained base ('model') or an exported model ('weight', 'config')"
            )
        preset, config, f0 = _match_preset(state, source)
        version, info = config.version, ""
    model = Synthesizer(config, f0=f0)
    has_enc_q = any(k.startswith("enc_q.") for k in state)
    load_state_strict(model, state, allow_missing=() if has_enc_q else ("enc_q.",), source=source)
    if not has_enc_q or not keep_posterior:
        model.remove_posterior()
    model.eval()
    return LoadedCheckpoint(
        model=model,
        kind=kind,
        version=version,
        sr=config.sr,
        f0=f0,
        preset=preset,
        path=path,
        info=info,
        extras=extras,
    )


def load_rvc_discriminator(path: str | os.PathLike[str]) -> MultiPeriodDiscriminator:
    """Load an RVC discriminator file (``f0D40k.pth`` or ``D_*.pth``): v1, v2 or tiny by shape."""
    path = Path(path)
    obj = safe_torch_load(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("discriminators.") for k in state):
        raise CheckpointError(f"{path}: not an RVC discriminator (no 'discriminators.*' keys)")
    for version in (*PERIODS, "tiny"):
        with torch.device("meta"):
            shapes = expected_state_shapes(build_discriminator(version))
        if not any(state_mismatches(shapes, state)):
            disc = build_discriminator(version)
            load_state_strict(disc, state, source=str(path))
            return disc
    raise CheckpointError(
        f"{path}: discriminator matches neither RVC v1 (7 members), v2 (9 members) nor tiny"
    )
