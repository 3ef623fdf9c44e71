"""Tests of rvc_lora.inference: checkpoint loading and the multi-adapter voice bank."""
