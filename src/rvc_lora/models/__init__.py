"""RVC's networks, reimplemented to load and save RVC checkpoints key-for-key."""

from rvc_lora.models.checkpoint import (
    LoadedCheckpoint,
    expected_state_shapes,
    load_rvc_checkpoint,
    load_state_strict,
)
from rvc_lora.models.discriminator import MultiPeriodDiscriminator, build_discriminator
from rvc_lora.models.export import export_rvc_model
from rvc_lora.models.presets import PRESETS, SynthConfig, get_preset
from rvc_lora.models.synthesizer import Synthesizer, build_synthesizer

__all__ = [
    "PRESETS",
    "LoadedCheckpoint",
    "MultiPeriodDiscriminator",
    "SynthConfig",
    "Synthesizer",
    "build_discriminator",
    "build_synthesizer",
    "expected_state_shapes",
    "export_rvc_model",
    "get_preset",
    "load_rvc_checkpoint",
    "load_state_strict",
]
