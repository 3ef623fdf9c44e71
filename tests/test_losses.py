"""RVC's loss formulas on inputs with known answers."""

from __future__ import annotations

import math
import weakref

import pytest
import torch

from rvc_lora.training.losses import (
    discriminator_loss,
    feature_loss,
    generator_loss,
    generator_total,
    generator_total_streaming,
    kl_loss,
    streaming_adversarial,
)


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


class _Member(torch.nn.Module):
    """A member discriminator with known outputs: maps ``a·x`` and ``(a·x)²``, logits their sum
    over time. Logs, per call: whether grad was on, whether the input was the real one (it does
    not require grad), how many real maps of other members were still alive as it started, and
    weak references to its maps."""

    def __init__(self, a: float, log: list) -> None:
        super().__init__()
        self.a, self.log = a, log

    def forward(self, x: torch.Tensor):
        real = not x.requires_grad
        alive = sum(
            ref() is not None
            for m, _, was_real, _, *refs in self.log
            if m is not self and was_real
            for ref in refs
        )
        f1 = self.a * x
        f2 = f1**2
        entry = (self, torch.is_grad_enabled(), real, alive, weakref.ref(f1), weakref.ref(f2))
        self.log.append(entry)
        return (f1 + f2).sum(-1), [f1, f2]


class _Disc(torch.nn.Module):
    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        self.log: list = []
        self.discriminators = torch.nn.ModuleList(_Member(a, self.log) for a in scales)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        outs = [(d(y), d(y_hat)) for d in self.discriminators]
        return (
            [r[0] for r, _ in outs],
            [g[0] for _, g in outs],
            [r[1] for r, _ in outs],
            [g[1] for _, g in outs],
        )


def _waves() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 1, 16, generator=g)
    return y, torch.randn(2, 1, 16, generator=g).requires_grad_(True)


@pytest.mark.parametrize(
    "scales, order_shows_in", [([0.1, 3.3, -0.7, 1.1], "fm"), ([0.5, -1.25, 2.0], "gen")]
)
def test_streaming_terms_equal_the_batched_ones_bit_for_bit(scales, order_shows_in) -> None:
    y, y_hat = _waves()
    disc = _Disc(scales)
    _, fake, fmap_r, fmap_g = disc(y, y_hat)
    gen_ref, fm_ref = generator_loss(fake), feature_loss(fmap_r, fmap_g)
    grad_ref = torch.autograd.grad(gen_ref + fm_ref, y_hat)[0]
    gen, fm = streaming_adversarial(disc, y, y_hat)
    assert torch.equal(gen, gen_ref) and torch.equal(fm, fm_ref)
    assert torch.equal(torch.autograd.grad(gen + fm, y_hat)[0], grad_ref)
    # by hand: both terms of every member are in
    hand_gen = sum(torch.mean((1 - (a * y_hat + (a * y_hat) ** 2).sum(-1)) ** 2) for a in scales)
    hand_fm = 2 * sum(
        torch.mean(torch.abs(a * y - a * y_hat))
        + torch.mean(torch.abs((a * y) ** 2 - (a * y_hat) ** 2))
        for a in scales
    )
    assert torch.isclose(gen, hand_gen) and torch.isclose(fm, hand_fm)
    # The sum order shows in the last bits on these numbers: members added in reverse give
    # another value, so the equalities above also check the order.
    zero = torch.zeros(())
    rev_gen = sum((torch.mean((1 - d) ** 2) for d in fake[::-1]), zero)
    rev_fm = 2 * sum(
        (
            torch.mean(torch.abs(r.detach() - f))
            for rs, fs in zip(fmap_r[::-1], fmap_g[::-1])
            for r, f in zip(rs, fs)
        ),
        zero,
    )
    rev, ref = (rev_fm, fm_ref) if order_shows_in == "fm" else (rev_gen, gen_ref)
    assert not torch.equal(rev, ref)


def test_streaming_scores_real_without_grad_and_frees_each_members_real_maps() -> None:
    y, y_hat = _waves()
    disc = _Disc([0.5, -1.25, 2.0])
    gen, fm = streaming_adversarial(disc, y, y_hat)
    # member by member: real under no_grad, then fake with grad
    assert [(m.a, grad, real) for m, grad, real, *_ in disc.log] == [
        (a, not real, real) for a in (0.5, -1.25, 2.0) for real in (True, False)
    ]
    # No earlier member's real maps are alive when a member scores the real input.
    assert [alive for _, _, real, alive, *_ in disc.log if real] == [0, 0, 0]
    assert gen.dtype == fm.dtype == torch.float32
    # RVC's batched call, by contrast, holds every member's real maps until the loss.
    disc.log.clear()
    _ = disc(y, y_hat)
    assert [alive for _, _, real, alive, *_ in disc.log if real] == [0, 2, 4]


def test_streaming_total_is_generator_totals() -> None:
    y, y_hat = _waves()
    disc = _Disc([0.5, -1.25])
    m = torch.randn(1, 2, 3)
    rest = (
        torch.zeros(1, 4, 3),
        torch.full((1, 4, 3), 0.1),
        m + 1,
        m * 0,
        m,
        m * 0,
        torch.ones(1, 1, 3),
    )
    _, fake, fmap_r, fmap_g = disc(y, y_hat)
    ref = generator_total(fake, fmap_r, fmap_g, *rest, c_mel=45.0, c_kl=2.0)
    out = generator_total_streaming(disc, y, y_hat, *rest, c_mel=45.0, c_kl=2.0)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert out.total.item() == pytest.approx(
        out.gen.item() + out.fm.item() + 45 * 0.1 + 2 * out.kl.item(), rel=1e-6
    )
