"""Builders that Hydra ``_target_`` nodes call: generator, discriminator, LoRA config.

Each takes typed arguments (never a cfg) and refuses files that cannot be trained from, with a
one-line message naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from rvc_lora.lora.config import LoraConfig, LoraError
from rvc_lora.models import discriminator as _disc
from rvc_lora.models.checkpoint import (
    expected_state_shapes,
    load_rvc_checkpoint,
    load_rvc_discriminator,
)
from rvc_lora.models.discriminator import MultiPeriodDiscriminator
from rvc_lora.models.synthesizer import Synthesizer, build_synthesizer
from rvc_lora.utils.errors import CheckpointError

log = logging.getLogger(__name__)

DISCRIMINATOR_VERSIONS = ("v1", "v2", "tiny")
LORA_MODES = ("lora", "full")


def build_generator(
    preset: str, f0: bool = True, pretrained: str | os.PathLike[str] | None = None
) -> Synthesizer:
    """The generator to fine-tune: an RVC pretrained base, or a random init without one.

    Args:
        preset: model preset (``v2_40k``, ``tiny``, ...); the file must be of this preset.
        f0: pitch-driven model or not; the file must agree.
        pretrained: RVC pretrained base (``f0G40k.pth``) or training ``G_*.pth``, with ``enc_q``.
    Raises:
        CheckpointError: the file is an exported inference model (no ``enc_q``, cannot train), or
            of another preset / F0 kind than requested.
    """
    if pretrained is None:
        log.warning(
            "no pretrained_g: training from random init (set model.pretrained_g to an "
            "RVC base such as f0G40k.pth)"
        )
        return build_synthesizer(preset, f0)
    loaded = load_rvc_checkpoint(pretrained, keep_posterior=True)
    if loaded.model.enc_q is None:
        raise CheckpointError(
            f"{pretrained}: an exported inference model (no enc_q) cannot be trained; use the "
            f"pretrained base it came from (e.g. f0G40k.pth) as pretrained_g"
        )
    if loaded.preset != preset or loaded.f0 != bool(f0):
        raise CheckpointError(
            f"{pretrained}: file is preset {loaded.preset} f0={loaded.f0}, but preset {preset} "
            f"f0={bool(f0)} was requested; pick the matching model config or file"
        )
    log.info("generator: %s (%s, f0=%s) from %s", loaded.kind, preset, loaded.f0, pretrained)
    # The loader hands models over in eval mode, for inference. RVC trains net_g in train mode
    # (as a random init here is), and Lightning keeps whatever mode it is given.
    return loaded.model.train()


def _disc_version_of(disc: MultiPeriodDiscriminator) -> str | None:
    shapes = expected_state_shapes(disc)
    for version in DISCRIMINATOR_VERSIONS:
        with torch.device("meta"):
            if expected_state_shapes(_disc.build_discriminator(version)) == shapes:
                return version
    return None


def build_discriminator_for(
    version: str, pretrained: str | os.PathLike[str] | None = None
) -> MultiPeriodDiscriminator:
    """RVC's multi-period discriminator, optionally loaded from an RVC ``D`` file.

    Args:
        version: ``v1`` (7 members), ``v2`` (9 members) or ``tiny`` (for the tiny preset).
        pretrained: RVC pretrained D (``f0D40k.pth``) or training ``D_*.pth``.
    Raises:
        CheckpointError: the file is not a discriminator, or is of another version.
    """
    if version not in DISCRIMINATOR_VERSIONS:
        raise ValueError(
            f"discriminator version {version!r} unknown; choose one of {DISCRIMINATOR_VERSIONS}"
        )
    if pretrained is None:
        return _disc.build_discriminator(version)
    disc = load_rvc_discriminator(pretrained)
    found = _disc_version_of(disc)
    if found != version:
        raise CheckpointError(
            f"{pretrained}: a {found} discriminator, but {version} was requested; "
            f"use the D file of the same RVC version as the generator"
        )
    return disc


def _plain(value: Any) -> Any:
    # Hydra hands over DictConfig/ListConfig; LoraConfig.to_dict (and the checkpoint) want plain.
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def make_lora_config(mode: str = "lora", **kwargs: Any) -> LoraConfig | None:
    """LoRA settings from a config node, or None for full fine-tuning.

    Args:
        mode: ``lora`` (adapters; ``kwargs`` go to :class:`LoraConfig`) or ``full`` (the
            baseline: every generator weight trains; ``kwargs`` are not used).
        kwargs: :class:`LoraConfig` fields; None values are dropped, so YAML can say
            ``targets: null`` for "the preset's".
    """
    if mode == "full":
        return None
    if mode != "lora":
        raise LoraError(f"lora mode {mode!r} unknown; choose one of {LORA_MODES}")
    fields: Mapping[str, Any] = {k: _plain(v) for k, v in kwargs.items() if v is not None}
    return LoraConfig.from_dict(fields)  # unknown keys: an error naming the known ones
