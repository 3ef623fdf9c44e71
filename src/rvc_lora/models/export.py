"""Write RVC WebUI's inference ``.pth`` (RVC_FACTS.md §5.3), so stock RVC loads our models."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rvc_lora.models.checkpoint import expected_state_shapes, state_mismatches
from rvc_lora.models.synthesizer import Synthesizer
from rvc_lora.utils.atomic import atomic_torch_save
from rvc_lora.utils.errors import CheckpointError


def sr_tag(sr: int) -> str:
    """40000 -> '40k', as RVC writes the ``sr`` field."""
    return f"{sr // 1000}k" if sr % 1000 == 0 else str(sr)


def export_rvc_model(
    model: Synthesizer,
    path: str | os.PathLike[str],
    *,
    info: str = "",
) -> Path:
    """Save ``model`` in RVC's exported-model layout, atomically.

    The file holds ``weight`` (every generator key except ``enc_q``, fp16), ``config`` (RVC's
    18-item list), ``info``, ``sr`` ('40k'), ``f0`` (1/0) and ``version``, in that order, like
    RVC's ``savee``. Weight-norm tensors are written as ``weight_g``/``weight_v``.

    Raises:
        CheckpointError: the model's keys are not RVC's (e.g. LoRA adapters not merged and
            unloaded yet).
    """
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("enc_q.")}
    with torch.device("meta"):
        reference = Synthesizer(model.config, f0=model.f0)
        reference.remove_posterior()
    missing, unexpected, shaped = state_mismatches(expected_state_shapes(reference), state)
    if missing or unexpected or shaped:
        raise CheckpointError(
            f"{path}: not exported: the model's keys are not RVC's ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shaped)} mis-shaped, e.g. "
            f"{(missing + unexpected + shaped)[:3]}); merge and unload LoRA adapters first"
        )
    cpt = {
        "weight": {k: v.detach().to("cpu", torch.float16).clone() for k, v in state.items()},
        "config": model.config.to_rvc_list(),
        "info": info,
        "sr": sr_tag(model.config.sr),
        "f0": int(model.f0),
        "version": model.config.version,
    }
    return atomic_torch_save(cpt, path)
