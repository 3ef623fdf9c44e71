"""The whole paper-table path on a handful of steps: prepare, sweep (two jobs side by side
through the joblib launcher), held-out scoring, early stopping, report, results copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rvc_lora.report.table import read_csv

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sweep_evaluate_report_end_to_end(tmp_path: Path) -> None:
    out, results = tmp_path / "pt", tmp_path / "results"
    cmd = [
        sys.executable, "scripts/reproduce_paper_table.py", "--profile", "quick",
        "--voices", "slt", "--sizes", "30", "--variants", "full,decoder_r8", "--seeds", "0,1",
        "--jobs", "2", "--out", str(out), "--results", str(results),
        "--cache-dir", str(tmp_path / "cache"),
        "--set", "trainer.max_steps=6", "--set", "trainer.val_check_interval=2",
        "--set", "data.batch_size=2", "--set", "module.val_metric_items=2",
        "--set", "callbacks.early_stop.patience=1", "--set", "logger=csv",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    jobs = sorted((out / "runs" / "slt" / "30").iterdir())
    assert [j.name for j in jobs] == [
        "decoder_r8_seed0", "decoder_r8_seed1", "full_seed0", "full_seed1"
    ]  # fmt: skip
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        info = json.loads((job / "run_info.json").read_text())
        assert info["voice"] == "slt" and info["data"]["max_seconds"] == 30
        assert 0 < info["data"]["seconds"] <= 30 < info["data"]["available_seconds"]
        assert metrics["heldout"]["items"] == "test" and metrics["heldout"]["n_items"] == 6
        assert metrics["early_stop"]["best_step"] in (2, 4, 6)
        assert metrics["wall_time_s"] > 0 and metrics["prepare_time_s"] >= 0
        assert metrics["train_memory_mb"] is not None
    # same seed, same subset of the training audio, whatever trains
    seconds = {
        j.name: json.loads((j / "run_info.json").read_text())["data"]["seconds"] for j in jobs
    }
    assert seconds["full_seed0"] == seconds["decoder_r8_seed0"]

    records = read_csv(out / "table.csv")
    means = [r for r in records if r["kind"] == "mean"]
    cells = {(r["voice"], r["data_size"], r["variant"]) for r in means}
    # one voice: its cells are the pooled ones (per-voice cells appear with two or more)
    assert cells == {("pooled", "30 s", "full"), ("pooled", "30 s", "lora r8 decoder")}
    assert {r["voice"] for r in records if r["kind"] == "run"} == {"slt"}
    pooled_full = next(r for r in means if (r["voice"], r["variant"]) == ("pooled", "full"))
    assert pooled_full["n_runs"] == 2 and pooled_full["mcd_db_lo"] <= pooled_full["mcd_db"]
    table = (out / "table.md").read_text()
    assert "Is LoRA worth it" in table and "Claims of the earlier RVC-LoRA attempt" in table
    for name in ("quality_vs_data_size.png", "quality_vs_wall.png", "overtraining.png"):
        assert (results / name).read_bytes()[:8] == PNG
    plan = json.loads((results / "run.json").read_text())["plan"]
    assert plan["jobs"] == 4 and plan["profile"] == "quick"
