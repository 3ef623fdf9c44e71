"""What a run writes about itself: clocks from the first training step, training's own memory,
the early-stop summary, the kept weights' held-out scores, the voice and data it trained on."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import open_dict

from rvc_lora.data.datamodule import VoiceDataModule
from rvc_lora.training.callbacks import StepTimer
from rvc_lora.training.run import train
from tests.training.conftest import compose_train

CPU = SimpleNamespace(device=torch.device("cpu"))  # all StepTimer reads of the module


def test_the_clock_starts_at_the_first_training_batch() -> None:
    timer = StepTimer()
    timer.on_fit_start(None, CPU)
    time.sleep(0.3)  # data preparation, feature extraction, set-up
    assert timer.elapsed() == 0.0 and timer.prepare_s is None
    timer.on_train_batch_start(None, CPU, None, 0)
    time.sleep(0.1)
    timer.on_train_batch_end(None, CPU, None, None, 0)
    timer.on_train_batch_start(None, CPU, None, 1)  # later batches do not move the clock's 0
    assert 0.1 <= timer.elapsed() < 0.3
    assert 0.3 <= timer.prepare_s < 0.4


def test_preparation_counts_from_the_fit_call_when_marked() -> None:
    timer = StepTimer()
    timer.fit_called()
    time.sleep(0.2)  # Lightning's prepare_data and setup run before any callback hook
    timer.on_fit_start(None, CPU)
    timer.on_train_batch_start(None, CPU, None, 0)
    assert 0.2 <= timer.prepare_s < 0.3
    timer.on_fit_start(None, CPU)  # a second fit with the same timer measures its own
    time.sleep(0.05)
    timer.on_train_batch_start(None, CPU, None, 0)
    assert 0.05 <= timer.prepare_s < 0.15


def test_a_resumed_clock_adds_its_own_training_time_not_its_preparation() -> None:
    timer = StepTimer()
    timer.load_state_dict({"elapsed_s": 100.0})
    timer.on_fit_start(None, CPU)
    time.sleep(0.2)
    assert timer.elapsed() == 100.0
    timer.on_train_batch_start(None, CPU, None, 0)
    time.sleep(0.05)
    assert 100.05 <= timer.elapsed() < 100.2
    assert timer.state_dict()["elapsed_s"] >= 100.05


@pytest.mark.slow
def test_run_writes_training_clocks_memory_heldout_and_data(
    tmp_path, shared_root, voice_dir, monkeypatch
) -> None:
    prepare = VoiceDataModule.prepare_data

    def slow_prepare(self) -> None:  # Lightning calls it inside fit, before any callback hook
        time.sleep(1.0)
        prepare(self)

    monkeypatch.setattr(VoiceDataModule, "prepare_data", slow_prepare)
    cfg = compose_train(
        shared_root,
        tmp_path,
        voice_dir,
        [
            "trainer.max_steps=2",
            "trainer.max_epochs=1",
            "module.val_metric_items=1",
            "data.val_fraction=0.5",  # several held-out slices: one monitors, the rest test
        ],
    )
    with open_dict(cfg):
        cfg.voice = "testvoice"  # what a configs/voice/<name>.yaml sets
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    info = json.loads((tmp_path / "run_info.json").read_text())

    assert metrics["prepare_time_s"] >= 1.0 and metrics["wall_time_s"] > 0
    assert metrics["peak_memory_mb"] > metrics["train_memory_mb"] >= 0
    assert metrics["early_stop"]["monitor"] == "val/mcd"
    assert metrics["early_stop"]["stopped_step"] is None  # patience null: ran to max_steps
    held = metrics["heldout"]
    assert held["items"] == "test" and held["n_items"] >= 1
    assert math.isfinite(held["mel_l1"]) and held["mel_l1"] > 0
    assert set(held) == {"mcd_db", "f0_rmse_cents", "secs", "mel_l1", "n_items", "items"}
    assert "val/secs" in metrics

    assert (info["voice"], info["d_policy"]) == ("testvoice", "frozen")
    data = info["data"]
    assert data["max_seconds"] is None and data["n_slices"] >= 1
    assert 0 < data["seconds"] <= data["available_seconds"]
