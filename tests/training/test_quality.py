"""Validation quality metrics: ``val/mcd``, ``val/f0_rmse`` and ``val/secs`` on a few items per
validation; the final held-out scores of the kept weights (``score_items``)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rvc_lora.data.synthetic import phrases
from rvc_lora.training.quality import (
    VAL_F0_RMSE,
    VAL_MCD,
    VAL_SECS,
    ValQuality,
    score_item,
    secs_item,
)
from tests.metrics.signals import demo
from tests.training.test_module import loader, make_batch, make_module, trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",
)
SR = 16000


def test_identical_audio_scores_zero_and_silence_is_nan_not_an_error() -> None:
    speech = phrases(SR, n=2, seconds=1.0, seed=0, f0=150)
    mcd, f0, secs = score_item(speech, speech, SR)
    assert mcd == pytest.approx(0.0, abs=1e-9) and f0 == pytest.approx(0.0, abs=1e-6)
    assert secs == pytest.approx(1.0, abs=1e-9)
    octave = phrases(SR, n=2, seconds=1.0, seed=0, f0=300)
    assert score_item(octave, speech, SR)[1] > 600  # cents: about one octave off
    mcd, f0, secs = score_item(np.zeros_like(speech), speech, SR)
    assert math.isfinite(mcd) and math.isnan(f0) and math.isnan(secs)
    mcd, f0, secs = score_item(np.full_like(speech, np.nan), speech, SR)
    assert math.isnan(mcd) and math.isnan(f0) and math.isnan(secs)


def test_secs_is_one_for_the_same_voice_and_lower_for_another_speaker() -> None:
    target, other = demo("slt", 1), demo("rms", 1)
    cache: dict = {}
    assert secs_item(target, target, SR, cache) == pytest.approx(1.0, abs=1e-9)
    assert len(cache) == 1  # the reference's embedding, made once
    same_voice = secs_item(demo("slt", 2), target, SR, cache)
    other_voice = secs_item(other, target, SR, cache)
    assert len(cache) == 1
    assert other_voice < same_voice - 0.05 and other_voice < 0.9
    # The cached reference embedding gives what a fresh one gives.
    assert secs_item(other, target, SR) == pytest.approx(other_voice, abs=1e-12)


def test_only_the_first_items_are_scored() -> None:
    quality = ValQuality(limit=3)
    wav = torch.from_numpy(phrases(SR, n=2, seconds=1.0, seed=0, f0=150))
    batch = wav.expand(2, 1, -1)  # [2, 1, N]
    lengths = torch.tensor([len(wav) // 160, len(wav) // 320])
    quality.add_batch(batch, batch, lengths, 160, SR)
    quality.add_batch(batch, batch, lengths, 160, SR)
    assert len(quality.scores) == 3
    assert quality.means()[VAL_MCD] == pytest.approx(0.0, abs=1e-9)
    assert quality.means()[VAL_SECS] == pytest.approx(1.0, abs=1e-9)
    quality.reset()
    assert all(math.isnan(v) for v in quality.means().values())
    with pytest.raises(ValueError, match="val_metric_items"):
        ValQuality(limit=-1)


def test_validation_logs_quality_metrics_per_epoch() -> None:
    module = make_module()
    tr = trainer(max_epochs=1, log_every_n_steps=1)
    tr.fit(module, loader(1), loader(2, seed=100))
    metrics = tr.callback_metrics
    assert VAL_MCD in metrics and torch.isfinite(metrics[VAL_MCD]) and metrics[VAL_MCD] > 0
    assert VAL_F0_RMSE in metrics and "val/loss_mel" in metrics
    assert VAL_SECS in metrics  # NaN allowed: the untrained output may hold no speech
    assert len(module.val_quality.scores) == 4  # 2 batches of 2 items, limit 4

    off = make_module(val_metric_items=0)
    result = trainer().validate(off, loader(1, seed=100), verbose=False)[0]
    assert "val/loss_mel" in result and VAL_MCD not in result


def test_score_items_scores_the_items_after_the_monitored_ones() -> None:
    module = make_module(val_metric_items=0)  # validate() below: the mel loss only
    val = loader(2, seed=100)  # 2 batches of 2 items: 4 items
    mel_loss = trainer().validate(module, val, verbose=False)[0]["val/loss_mel"]
    module.train()
    test = module.score_items(val, skip=3)
    assert module.training  # the mode is put back
    assert (test["n_items"], test["items"]) == (1, "test")
    # The one test item is batch 1's second item: its own mel L1, with validation's noise.
    batch = make_batch(101)
    with torch.no_grad():
        _, y_mel, _, diff, mask = module.eval()._val_forward(batch, 1)
    own = float(diff[1].sum() / (mask[1].sum() * y_mel.shape[1]))
    assert test["mel_l1"] == pytest.approx(own, rel=1e-6)
    assert math.isfinite(test["mcd_db"]) and math.isfinite(test["f0_rmse_cents"])
    # No item after the monitored ones: every item is scored, with val/loss_mel's maths (its
    # batches weigh alike here: same lengths at the same batch positions).
    every = module.score_items(val, skip=4)
    assert (every["n_items"], every["items"]) == (4, "all")
    assert every["mel_l1"] == pytest.approx(mel_loss, rel=1e-5)


def test_warm_up_loads_every_metric_library_before_a_run_measures_memory() -> None:
    # In a fresh process: a reused joblib worker has them loaded, so a fresh one must load them
    # before its memory baseline too, or its first run counts them as training memory.
    code = (
        "import sys; from rvc_lora.training import quality; "
        "names = ('pyworld', 'parselmouth', 'resemblyzer'); "
        "before = [n in sys.modules for n in names]; quality.warm_up(16000); "
        "from rvc_lora.metrics.speaker import default_speaker_encoder as enc; "
        "print(before, [n in sys.modules for n in names], enc.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "[False, False, False] [True, True, True] 1"
