"""Loss edge cases that mutation testing (docs/mutation.md) found unchecked: the float32
accumulator whatever the inputs' precision, and a single discriminator or feature layer."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.training.losses import discriminator_loss, feature_loss, generator_loss


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_losses_are_float32_whatever_the_inputs_precision(dtype: torch.dtype) -> None:
    real = [torch.full((2, 3), 0.75, dtype=dtype)]
    fake = [torch.full((2, 3), 0.25, dtype=dtype)]
    d = discriminator_loss(real, fake)
    g = generator_loss(fake)
    fm = feature_loss([[real[0]]], [[fake[0]]])
    assert (d.dtype, g.dtype, fm.dtype) == (torch.float32,) * 3
    # (1 - 0.75)² + 0.25² = 0.125; (1 - 0.25)² = 0.5625; 2 · |0.75 - 0.25| = 1.0 (all exact)
    assert (d.item(), g.item(), fm.item()) == (0.125, 0.5625, 1.0)


def test_one_discriminator_with_one_feature_layer() -> None:
    # RVC's multi-period D has several members; a single member (and a single layer) is the
    # smallest case and must not index a second one
    real, fake = [torch.ones(1, 4)], [torch.zeros(1, 4)]
    assert discriminator_loss(real, fake).item() == 0.0
    assert generator_loss(fake).item() == 1.0
    assert feature_loss([[torch.ones(4)]], [[torch.zeros(4)]]).item() == 2.0
