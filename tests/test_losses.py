"""RVC's loss formulas on inputs with known answers."""

from __future__ import annotations

import math

import torch

from rvc_lora.training.losses import discriminator_loss, feature_loss, generator_loss, kl_loss


def test_lsgan_terms() -> None:
    real = [torch.ones(2, 5), torch.full((2, 3), 0.5)]
    fake = [torch.zeros(2, 5), torch.full((2, 3), 0.5)]
    # D: member 1 is perfect (0); member 2: (1-0.5)^2 + 0.5^2 = 0.5
    assert torch.isclose(discriminator_loss(real, fake), torch.tensor(0.5))
    # G: (1-0)^2 + (1-0.5)^2
    assert torch.isclose(generator_loss(fake), torch.tensor(1.25))


def test_feature_matching_is_twice_the_mean_abs_difference() -> None:
    fr = [[torch.zeros(2, 4), torch.ones(3)]]
    fg = [[torch.full((2, 4), 0.5), torch.ones(3)]]
    assert torch.isclose(feature_loss(fr, fg), torch.tensor(1.0))


def test_kl_of_identical_gaussians_is_zero_and_masked() -> None:
    m = torch.randn(1, 4, 6)
    logs = torch.randn(1, 4, 6) * 0.1
    mask = torch.ones(1, 1, 6)
    # With z_p = m_p and equal log-scales only the constant -0.5 remains per element.
    assert torch.isclose(kl_loss(m, logs, m, logs, mask), torch.tensor(-0.5 * 4))
    # A shift of one prior standard deviation adds 0.5 per element.
    shifted = m + torch.exp(logs)
    assert torch.isclose(kl_loss(shifted, logs, m, logs, mask), torch.tensor(0.0), atol=1e-5)
    # Masked frames do not count, whatever they hold.
    mask[..., 3:] = 0
    garbage = shifted.clone()
    garbage[..., 3:] = 1e3
    assert math.isclose(kl_loss(garbage, logs, m, logs, mask).item(), 0.0, abs_tol=1e-5)
