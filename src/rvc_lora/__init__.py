"""rvc-lora: LoRA fine-tuning for RVC voice-conversion models."""

__version__ = "0.1.0"
