"""bench/bench_train.py and bench/profile_train.py: what issue 17's acceptance figures rest on.

The gradient check is only as good as its two modules starting equal and its limit being
applied; the profile only as good as its books adding up and its regions being told apart.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:  # profile_train imports bench_train; spawned children too
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_train = _load("bench_train")
profile_train = _load("profile_train")


def _trainable_state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.trainable_state().items()}


@pytest.mark.parametrize("variant", list(bench_train.VARIANTS))
def test_same_seed_gives_reference_and_fast_modules_equal_weights(variant):
    ref = bench_train.build_module(variant, "tiny", reference=True)
    fast = bench_train.build_module(variant, "tiny", reference=False)
    a, b = _trainable_state(ref), _trainable_state(fast)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    # what the gradients are taken through also agrees: the frozen base of the generator
    ga, gb = ref.generator.state_dict(), fast.generator.state_dict()
    assert all(torch.equal(ga[k], gb[k]) for k in ga.keys() & gb.keys())
    other = _trainable_state(bench_train.build_module(variant, "tiny", reference=False, seed=5))
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_check_fails_what_differs_and_passes_what_does_not():
    from rvc_lora.training.step_check import compare_steps

    ref = bench_train.build_module("lora", "tiny", reference=True)
    same = bench_train.build_module("lora", "tiny", reference=False)
    other = bench_train.build_module("lora", "tiny", reference=False, seed=5)
    torch.manual_seed(1)
    batch = bench_train.make_batch(ref.generator.config, 2, 64)
    rows = {}
    for name, fast in (("same", same), ("other", other)):
        d = compare_steps(ref, fast, batch, seed=0)
        rows[name] = {"losses": max(d["losses"].values()), "grads": max(d["grads"].values())}
    assert rows["same"]["losses"] <= bench_train.CHECK_TOL
    assert rows["same"]["grads"] <= bench_train.CHECK_TOL
    assert bench_train.over_tolerance(rows) == ["other/losses", "other/grads"]


def test_over_tolerance_limit_edges():
    tol = bench_train.CHECK_TOL
    rows = {
        "lora": {"losses": tol, "grads": 0.0, "worst": "-"},
        "full_g": {"losses": 0.0, "grads": math.nextafter(tol, 1.0), "worst": "x"},
        "full": {"losses": math.nan, "grads": 0.0, "worst": "y"},
    }
    assert bench_train.over_tolerance(rows) == ["full_g/grads", "full/losses"]


def test_ratio_lines_are_lora_over_each_baseline_with_the_issue_goals():
    results = {
        "lora": {"step_s": 1.0, "peak_mb": 300.0},
        "full_g": {"step_s": 2.0, "peak_mb": 400.0},
        "full": {"step_s": 4.0, "peak_mb": 1000.0},
    }
    assert bench_train.ratio_lines(results) == [
        "ratio LoRA / full G + D trained: step 0.25x (goal <= 0.40), "
        "peak memory 0.30x (goal <= 0.55)",
        "ratio LoRA / full G, D frozen: step 0.50x (goal <= 0.60), "
        "peak memory 0.75x (goal <= 0.80)",
    ]


def _profile(variant: str):
    module = bench_train.build_module(variant, "tiny", reference=False)
    batches = [bench_train.make_batch(module.generator.config, 2, 48) for _ in range(2)]
    profile = profile_train.StepProfile(at=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[profile],
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return profile, module


@pytest.mark.parametrize("variant", ["lora", "full"])
def test_profile_books_add_up_and_regions_are_told_apart(variant):
    profile, module = _profile(variant)
    booked = sum(profile.forward_s.values()) + profile.backward_total_s
    booked += profile.optimizer_s + profile.hooks_s
    assert booked == pytest.approx(profile.step_s, rel=1e-9)
    assert sum(profile.backward_s.values()) <= profile.backward_total_s
    # every region ran and the G step's D real has no graph (frozen for G's loss)
    regions = {"encoders+flow", "decoder", "G loss: D real", "G loss: D fake"}
    assert regions <= profile.forward_s.keys()
    assert profile.backward_s["G loss: D real"] == 0.0
    assert profile.kept.get("G loss: D real", 0) == 0
    assert profile.backward_s["G loss: D fake"] > 0 and profile.backward_s["decoder"] > 0
    assert profile.kept["decoder"] > 0 and profile.kept["G loss: D fake"] > 0
    if variant == "full":  # D's own loss: both branches train D
        assert profile.backward_s["D loss: D real"] > 0
        assert profile.kept["D loss: D real"] > 0 and profile.kept["D loss: D fake"] > 0
    else:
        assert not any(k.startswith("D loss") for k in profile.forward_s)
    # hooks are gone after the profiled step
    assert "manual_backward" not in vars(module)
    assert not module.generator.dec._forward_hooks and not module.generator.dec._forward_pre_hooks
    lines = profile.table()
    assert lines[0].split() == ["region", "forward", "s", "backward", "s", "kept", "MB"]
    assert lines[-1].startswith("step total")
