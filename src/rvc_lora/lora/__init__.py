"""LoRA / rsLoRA / DoRA adapters for RVC's synthesizer, exact under RVC's weight norm.

Typical use::

    cfg = LoraConfig(preset="decoder", rank=8, alpha=16)
    inject_lora(model, cfg)                       # wraps, freezes the rest
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-4)
    ...
    save_adapter(model, "voice.safetensors")      # fp16, a few hundred KB
    unload_lora(model, merge=True)                # plain RVC model again (weight_g/weight_v)
"""

from rvc_lora.lora.config import (
    PRESETS,
    LoraConfig,
    LoraError,
    preset_extra_trainable,
    preset_targets,
)
from rvc_lora.lora.inject import (
    Injection,
    disable_lora,
    inject_lora,
    injection,
    lora_layers,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
    unload_lora,
    unmerge_lora,
)
from rvc_lora.lora.io import (
    AdapterFile,
    base_identity,
    base_state_dict,
    load_adapter,
    read_adapter,
    save_adapter,
)
from rvc_lora.lora.layers import LoraConv1d, LoraConvTranspose1d, LoraLayer, LoraLinear

__all__ = [
    "PRESETS",
    "AdapterFile",
    "Injection",
    "LoraConfig",
    "LoraConv1d",
    "LoraConvTranspose1d",
    "LoraError",
    "LoraLayer",
    "LoraLinear",
    "base_identity",
    "base_state_dict",
    "disable_lora",
    "inject_lora",
    "injection",
    "load_adapter",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "preset_extra_trainable",
    "preset_targets",
    "read_adapter",
    "save_adapter",
    "trainable_parameters",
    "unload_lora",
    "unmerge_lora",
]
