"""Validation quality metrics: ``val/mcd`` and ``val/f0_rmse`` on a few items per validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvc_lora.data.synthetic import phrases
from rvc_lora.training.quality import VAL_F0_RMSE, VAL_MCD, ValQuality, score_item
from tests.training.test_module import loader, make_module, trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",
)
SR = 16000


def test_identical_audio_scores_zero_and_silence_is_nan_not_an_error() -> None:
    speech = phrases(SR, n=2, seconds=1.0, seed=0, f0=150)
    mcd, f0 = score_item(speech, speech, SR)
    assert mcd == pytest.approx(0.0, abs=1e-9) and f0 == pytest.approx(0.0, abs=1e-6)
    octave = phrases(SR, n=2, seconds=1.0, seed=0, f0=300)
    assert score_item(octave, speech, SR)[1] > 600  # cents: about one octave off
    mcd, f0 = score_item(np.zeros_like(speech), speech, SR)
    assert math.isfinite(mcd) and math.isnan(f0)
    mcd, f0 = score_item(np.full_like(speech, np.nan), speech, SR)
    assert math.isnan(mcd) and math.isnan(f0)


def test_only_the_first_items_are_scored() -> None:
    quality = ValQuality(limit=3)
    wav = torch.from_numpy(phrases(SR, n=2, seconds=1.0, seed=0, f0=150))
    batch = wav.expand(2, 1, -1)  # [2, 1, N]
    lengths = torch.tensor([len(wav) // 160, len(wav) // 320])
    quality.add_batch(batch, batch, lengths, 160, SR)
    quality.add_batch(batch, batch, lengths, 160, SR)
    assert len(quality.scores) == 3
    assert quality.means()[VAL_MCD] == pytest.approx(0.0, abs=1e-9)
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
    assert len(module.val_quality.scores) == 4  # 2 batches of 2 items, limit 4

    off = make_module(val_metric_items=0)
    result = trainer().validate(off, loader(1, seed=100), verbose=False)[0]
    assert "val/loss_mel" in result and VAL_MCD not in result
