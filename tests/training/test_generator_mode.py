"""The generator to fine-tune is handed over in train mode, loaded or not (as RVC's net_g)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rvc_lora.training.build import build_generator

TINY_BASE = Path(__file__).resolve().parents[2] / "data" / "pretrained" / "tiny" / "f0G16k.pth"


@pytest.mark.slow
def test_a_loaded_base_trains_in_train_mode_like_a_random_init() -> None:
    # The checkpoint loader returns eval mode (for inference); Lightning keeps the mode it gets,
    # so 589 of the demo's modules trained in eval mode and Lightning warned about it.
    loaded = build_generator("tiny", f0=True, pretrained=TINY_BASE)
    fresh = build_generator("tiny", f0=True)
    assert [n for n, m in loaded.named_modules() if not m.training] == []
    assert [n for n, m in fresh.named_modules() if not m.training] == []
