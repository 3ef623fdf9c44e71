"""RVC's content-feature rule (RVC_FACTS.md §6.3), shared by both HuBERT backends.

Kept apart from :mod:`rvc_lora.features.hubert` so that the fairseq backend, which hubert.py
loads on request, does not import hubert.py back.
"""

from __future__ import annotations

# RVC's 1-based fairseq ``output_layer`` per model version (§6.3).
OUTPUT_LAYER = {"v1": 9, "v2": 12}
WINDOW, HOP = 400, 320  # receptive field and hop of the conv feature extractor, in samples


def check_version(version: str) -> None:
    """Raise ``ValueError`` unless ``version`` is ``"v1"`` or ``"v2"``."""
    if version not in OUTPUT_LAYER:
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
