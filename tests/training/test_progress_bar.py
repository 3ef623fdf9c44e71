"""The progress bar's label on step-limited runs: step count and whole-run ETA."""

from __future__ import annotations

import time
from types import SimpleNamespace

from rvc_lora.training.callbacks import StepProgressBar


def _bar(**trainer) -> StepProgressBar:
    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(**trainer)
    return bar


def test_step_limited_run_shows_steps_and_eta() -> None:
    bar = _bar(max_steps=100, max_epochs=-1, global_step=25)
    bar._started, bar._first_step = time.perf_counter() - 50.0, 0  # 2 s per step so far
    assert bar._get_train_description(3) == "Epoch 3 · step 25/100 · ETA 2:30"


def test_resumed_run_times_only_its_own_steps() -> None:
    bar = _bar(max_steps=100, max_epochs=-1, global_step=60)
    bar._started, bar._first_step = time.perf_counter() - 10.0, 50  # 10 steps in 10 s
    assert bar._get_train_description(7).endswith("step 60/100 · ETA 0:40")


def test_epoch_limited_run_keeps_lightnings_label() -> None:
    bar = _bar(max_steps=-1, max_epochs=20, global_step=5)
    assert bar._get_train_description(4).strip() == "Epoch 4/19"
