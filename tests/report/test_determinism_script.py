"""scripts/determinism_check.py: what it compares and how its table reads (no training here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "determinism_check.py"


@pytest.fixture
def check(monkeypatch):
    spec = importlib.util.spec_from_file_location("determinism_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _job(folder: Path, adapter: bytes, mcd: float, curve: list[float]) -> Path:
    (folder / "csv").mkdir(parents=True)
    (folder / "adapter.safetensors").write_bytes(adapter)
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
    a = check.run_facts(_job(tmp_path / "a", b"w", 9.5, [11.0, 10.0]))
    b = check.run_facts(_job(tmp_path / "b", b"w", 9.5, [11.0, 10.0]))
    c = check.run_facts(_job(tmp_path / "c", b"x", 9.25, [11.5, 10.0]))
    assert a["sha256"] == b["sha256"] != c["sha256"] and a["best_step"] == 32
    assert check._diff(a, b) == (0.0, 0.0)
    assert check._diff(a, c) == (0.25, 0.5)

    sweep = tmp_path / "sweep"
    for seed, mcd in enumerate((9.0, 10.0, 11.0)):
        _job(sweep / "slt" / "30" / f"full_seed{seed}", b"w", mcd, [11.0])
    args = argparse.Namespace(voice="slt", size="30", seed=0)
    assert check.seed_spread(sweep, args, "full") == pytest.approx(1.0)
    assert check.seed_spread(sweep, args, "decoder_r8") is None
    text = check.table(args, {"full": {"a": a, "b": b, "t2": c}}, sweep)
    assert "| full | 1 thread, again | equal | 0 | 0 | 0.000 | 1.000 |" in text
    assert "| full | 2 threads | differ | 0.25 | 0.5 | 0.250 | 1.000 |" in text
    assert math.isnan(check._diff({"heldout": {}, "curve": {}}, {"heldout": {}, "curve": {}})[0])
