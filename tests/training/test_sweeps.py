"""`python train.py -m ...` sweeps run as subprocesses; every job dir holds its artefacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rvc_lora.utils.cli import CONFIG_DIR
from tests.training.conftest import FAST

REPO = Path(CONFIG_DIR).parent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sweep", "artefacts"),
    [
        ("lora.rank=4,8", ["adapter.safetensors", "adapter.safetensors"]),
        ("lora=default,full", ["adapter.safetensors", "generator.pth"]),
    ],
)
def test_multirun_jobs_hold_artefacts(tmp_path, shared_root, voice_dir, sweep, artefacts) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        sweep,
        f"data.input_dir={voice_dir}",
        f"paths.root_dir={shared_root}",
        f"hydra.sweep.dir={sweep_dir}",
        "trainer.max_steps=2",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        *FAST,
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == len(artefacts)
    ranks = []
    for job, artefact in zip(jobs, artefacts):
        assert (job / artefact).is_file()
        assert (job / ".hydra" / "config.yaml").is_file()
        metrics = json.loads((job / "metrics.json").read_text())
        info = json.loads((job / "run_info.json").read_text())
        assert metrics["global_step"] == 2 and "val/loss_mel" in metrics
        assert info["parameters"]["trainable"] > 0
        ranks.append(info["lora"].get("rank"))
    if sweep.startswith("lora.rank"):
        assert ranks == [4, 8]
