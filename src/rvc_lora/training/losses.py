"""RVC's GAN losses (RVC_FACTS.md §4): LSGAN, feature matching x2, KL between posterior and prior.

All reductions are in float32: under autocast the discriminator outputs may be half precision,
and their squares lose accuracy there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_d mean((1 - D(y))²) + mean(D(ŷ)²) over the member discriminators."""
    loss = real[0].new_zeros((), dtype=torch.float32)
    for dr, dg in zip(real, fake):
        loss = loss + torch.mean((1 - dr.float()) ** 2) + torch.mean(dg.float() ** 2)
    return loss


def generator_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Adversarial term for G: Σ_d mean((1 - D(ŷ))²)."""
    loss = fake[0].new_zeros((), dtype=torch.float32)
    for dg in fake:
        loss = loss + torch.mean((1 - dg.float()) ** 2)
    return loss


def feature_loss(
    fmap_real: Sequence[Sequence[torch.Tensor]], fmap_fake: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching: 2 · Σ over discriminators and layers of mean |f_real - f_fake|."""
    loss = fmap_fake[0][0].new_zeros((), dtype=torch.float32)
    for dr, dg in zip(fmap_real, fmap_fake):
        for rl, gl in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(rl.float().detach() - gl.float()))
    return 2 * loss


def kl_loss(
    z_p: torch.Tensor,
    logs_q: torch.Tensor,
    m_p: torch.Tensor,
    logs_p: torch.Tensor,
    z_mask: torch.Tensor,
) -> torch.Tensor:
    """KL(q || p) per masked frame; z_p, logs_q ``[B, C, T]`` from the posterior and flow,
    m_p, logs_p from the prior, z_mask ``[B, 1, T]``."""
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5 + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


class GeneratorLosses(NamedTuple):
    """The generator's loss and its unweighted terms (scalars, for logging)."""

    total: torch.Tensor
    gen: torch.Tensor
    fm: torch.Tensor
    mel: torch.Tensor
    kl: torch.Tensor


def generator_total(
    fake: Sequence[torch.Tensor],
    fmap_real: Sequence[Sequence[torch.Tensor]],
    fmap_fake: Sequence[Sequence[torch.Tensor]],
    y_mel: torch.Tensor,
    y_hat_mel: torch.Tensor,
    z_p: torch.Tensor,
    logs_q: torch.Tensor,
    m_p: torch.Tensor,
    logs_p: torch.Tensor,
    z_mask: torch.Tensor,
    *,
    c_mel: float,
    c_kl: float,
) -> GeneratorLosses:
    """RVC's generator loss: adv + fm + c_mel · L1(mel) + c_kl · KL (RVC: c_mel 45, c_kl 1).

    Args:
        fake: D's logits on ŷ, one per member discriminator.
        fmap_real, fmap_fake: D's feature maps on y and ŷ.
        y_mel, y_hat_mel: target and generated log-mel ``[B, M, T]``.
        z_p, logs_q, m_p, logs_p, z_mask: see :func:`kl_loss`.
        c_mel, c_kl: the weights; keyword-only so a caller cannot swap them.
    """
    gen = generator_loss(fake)
    fm = feature_loss(fmap_real, fmap_fake)
    mel = F.l1_loss(y_mel, y_hat_mel)
    kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask)
    return GeneratorLosses(gen + fm + c_mel * mel + c_kl * kl, gen, fm, mel, kl)
