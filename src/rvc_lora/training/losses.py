"""RVC's GAN losses (RVC_FACTS.md §4): LSGAN, feature matching x2, KL between posterior and prior.

All reductions are in float32: under autocast the discriminator outputs may be half precision,
and their squares lose accuracy there.

:func:`generator_total` takes D's outputs for all members at once (RVC's form);
:func:`generator_total_streaming` runs D itself, member by member, so that one member's real
feature maps are freed before the next member runs. Both add the same terms in the same order:
their values are bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_d mean((1 - D(y))²) + mean(D(ŷ)²) over the member discriminators."""
    loss = real[0].new_zeros((), dtype=torch.float32)
    for dr, dg in zip(real, fake):
        loss = loss + torch.mean((1 - dr.float()) ** 2) + torch.mean(dg.float() ** 2)
    return loss


def _adv_term(fake: torch.Tensor) -> torch.Tensor:
    return torch.mean((1 - fake.float()) ** 2)


def generator_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Adversarial term for G: Σ_d mean((1 - D(ŷ))²)."""
    loss = fake[0].new_zeros((), dtype=torch.float32)
    for dg in fake:
        loss = loss + _adv_term(dg)
    return loss


def _fm_term(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # The real map is a constant of G's step; detached so no graph reaches D(y).
    return torch.mean(torch.abs(real.float().detach() - fake.float()))


def feature_loss(
    fmap_real: Sequence[Sequence[torch.Tensor]], fmap_fake: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching: 2 · Σ over discriminators and layers of mean |f_real - f_fake|."""
    loss = fmap_fake[0][0].new_zeros((), dtype=torch.float32)
    for dr, dg in zip(fmap_real, fmap_fake):
        for rl, gl in zip(dr, dg):
            loss = loss + _fm_term(rl, gl)
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


def _combine(
    gen: torch.Tensor,
    fm: torch.Tensor,
    y_mel: torch.Tensor,
    y_hat_mel: torch.Tensor,
    z_p: torch.Tensor,
    logs_q: torch.Tensor,
    m_p: torch.Tensor,
    logs_p: torch.Tensor,
    z_mask: torch.Tensor,
    c_mel: float,
    c_kl: float,
) -> GeneratorLosses:
    mel = F.l1_loss(y_mel, y_hat_mel)
    kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask)
    return GeneratorLosses(gen + fm + c_mel * mel + c_kl * kl, gen, fm, mel, kl)


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
    return _combine(gen, fm, y_mel, y_hat_mel, z_p, logs_q, m_p, logs_p, z_mask, c_mel, c_kl)


def _member_terms(
    member: nn.Module, y: torch.Tensor, y_hat: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    # A function of its own: the member's real maps die when it returns (a loop variable would
    # keep the last ones alive while the next member runs).
    with torch.no_grad():
        _, fmap_r = member(y)
    logits, fmap_g = member(y_hat)
    return _adv_term(logits), [_fm_term(rl, gl) for rl, gl in zip(fmap_r, fmap_g)]


def streaming_adversarial(
    discriminator: nn.Module, y: torch.Tensor, y_hat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """G's adversarial and feature-matching terms, one member discriminator at a time.

    For each member of ``discriminator.discriminators``: D(y) under ``torch.no_grad()`` (a
    constant of G's step), D(ŷ), then the member's terms, added in the order of
    :func:`generator_loss` and :func:`feature_loss`; the member's real maps are dropped before the
    next member runs. So the values equal theirs bit for bit, while at most one member's real maps
    are alive (RVC keeps all of them until the loss).

    Args:
        discriminator: a multi-period discriminator (``.discriminators``, each member
            ``x [B, 1, N] -> (logits [B, L], feature maps)``).
        y, y_hat: real and generated waveforms ``[B, 1, N]``.
    Returns:
        ``(gen, fm)``: Σ_d mean((1 - D(ŷ))²) and 2 · Σ_d Σ_l mean |f_real - f_fake| (fp32 scalars).
    """
    gen = fm = None
    for member in discriminator.discriminators:
        adv, fm_terms = _member_terms(member, y, y_hat)
        if gen is None:  # the start values of generator_loss / feature_loss
            gen = adv.new_zeros((), dtype=torch.float32)
            fm = fm_terms[0].new_zeros((), dtype=torch.float32)
        gen = gen + adv
        for term in fm_terms:
            fm = fm + term
    if gen is None:
        raise ValueError("discriminator has no member discriminators")
    return gen, 2 * fm


def generator_total_streaming(
    discriminator: nn.Module,
    y: torch.Tensor,
    y_hat: torch.Tensor,
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
    """:func:`generator_total` of ``discriminator(y, y_hat)``, run member by member (see
    :func:`streaming_adversarial`); the same values bit for bit, less memory.

    Args:
        discriminator: the multi-period discriminator.
        y, y_hat: real and generated waveform segments ``[B, 1, N]``.
        y_mel, y_hat_mel, z_p, logs_q, m_p, logs_p, z_mask, c_mel, c_kl: as
            :func:`generator_total`.
    """
    gen, fm = streaming_adversarial(discriminator, y, y_hat)
    return _combine(gen, fm, y_mel, y_hat_mel, z_p, logs_q, m_p, logs_p, z_mask, c_mel, c_kl)
