"""Inference: load a voice (RVC model, adapter or training checkpoint) and switch between voices."""
