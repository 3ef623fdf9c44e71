"""Key -> shape tables of two variants, checked in as JSON (regenerate with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rvc_lora.models import build_synthesizer
from tests.conftest import UPDATE_GOLDEN

GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.mark.parametrize(("preset", "f0"), [("v2_40k", True), ("v1_48k", False)])
def test_state_dict_keys_and_shapes_match_golden(preset: str, f0: bool) -> None:
    with torch.device("meta"):
        state = build_synthesizer(preset, f0).state_dict()
    table = {k: list(v.shape) for k, v in state.items()}
    path = GOLDEN / f"keys_{preset}_{'f0' if f0 else 'nof0'}.json"
    if UPDATE_GOLDEN:
        rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items())
        path.write_text("{\n" + rows + "\n}\n")
    golden = json.loads(path.read_text())
    assert list(table) == list(golden)  # same keys in RVC's order
    assert table == golden
