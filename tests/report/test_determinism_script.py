"""scripts/determinism_check.py: what it compares and how its table reads (no training here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "determinism_check.py"


@pytest.fixture
def check(monkeypatch):
    spec = importlib.util.spec_from_file_location("determinism_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _job(folder: Path, weight: float, mcd: float, curve: list[float]) -> Path:
    from safetensors.numpy import save_file

    (folder / "csv").mkdir(parents=True)
    # The run folder in the metadata: equal weights in files whose bytes differ.
    save_file({"w": np.full((2, 3), weight, np.float32)}, str(folder / "adapter.safetensors"),
              metadata={"run": str(folder)})  # fmt: skip
    metrics = {
        "artifact": "/elsewhere/adapter.safetensors",  # another machine's path: found by name
        "heldout": {"mcd_db": mcd, "f0_rmse_cents": 100.0, "secs": 0.5, "mel_l1": 0.9},
        "early_stop": {"best_step": 32},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = ["epoch,step,val/mcd"] + [f"0,{16 * i + 15},{v}" for i, v in enumerate(curve)]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_equal_runs_read_equal_and_differences_are_the_largest_ones(check, tmp_path) -> None:
    a = check.run_facts(_job(tmp_path / "a", 1.0, 9.5, [11.0, 10.0]))
    b = check.run_facts(_job(tmp_path / "b", 1.0, 9.5, [11.0, 10.0]))
    c = check.run_facts(_job(tmp_path / "c", 1.5, 9.25, [11.5, 10.0]))
    files = [(tmp_path / n / "adapter.safetensors").read_bytes() for n in "ab"]
    assert files[0] != files[1]  # the metadata differs, the tensors do not
    assert a["digest"] == b["digest"] != c["digest"] and a["best_step"] == 32
    assert check._delta(a, c, "mcd_db") == 0.25 and check._curve_delta(a, c) == 0.5
    assert check._curve_delta(a, b) == 0.0

    sweep = tmp_path / "sweep"
    for seed, mcd in enumerate((9.0, 10.0, 11.0)):
        _job(sweep / "slt" / "30" / f"full_seed{seed}", 1.0, mcd, [11.0])
    args = argparse.Namespace(voice="slt", size="30", seed=0)
    assert check.seed_spread(sweep, args, "full") == pytest.approx(1.0)
    assert check.seed_spread(sweep, args, "decoder_r8") is None
    text = check.table(args, {"full": {"a": a, "b": b, "t2": c}}, sweep)
    assert "| full | 1 thread, again | equal | 0.000 | 0.0 | 0.000 | 0.000 | 1.000 |" in text
    assert "| full | 2 threads | differ | 0.250 | 0.0 | 0.000 | 0.500 | 1.000 |" in text
    assert math.isnan(check._curve_delta({"curve": {}}, {"curve": {1: 2.0}}))
