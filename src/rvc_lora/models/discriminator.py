"""Multi-period discriminators: RVC v1 (periods 2..17) and v2 (adds 23 and 37)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.models.activations import LRELU_SLOPE, leaky_relu
from rvc_lora.models.nn import get_padding, wn_conv1d, wn_conv2d

PERIODS = {"v1": (2, 3, 5, 7, 11, 17), "v2": (2, 3, 5, 7, 11, 17, 23, 37)}


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform: grouped strided convs.

    ``width`` scales every channel count (1.0 = RVC; < 1 for the tiny preset).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(int(n * width), 4) for n in (16, 64, 256, 1024, 1024, 1024)]
        groups = [1, 4, 16, 64, 256, 1]
        # Keep each group at least 4 channels wide, as in RVC (e.g. 1024 / 256 = 4).
        groups = [min(g, ci // 4) if g > 1 else 1 for g, ci in zip(groups, c)]
        spec = [(15, 1, 7), (41, 4, 20), (41, 4, 20), (41, 4, 20), (41, 4, 20), (5, 1, 2)]
        ins = [1, *c[:-1]]
        self.convs = nn.ModuleList(
            wn_conv1d(i, o, k, s, groups=g, padding=p)
            for i, o, g, (k, s, p) in zip(ins, c, groups, spec)
        )
        self.conv_post = wn_conv1d(c[-1], 1, 3, 1, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x ``[B, 1, N]`` -> (logits ``[B, L]``, feature maps)."""
        fmap = []
        for conv in self.convs:
            # The conv output is fresh and read by nothing else: in place, so one tensor serves
            # as the feature map and as what the next conv saves for backward.
            x = leaky_relu(conv(x), LRELU_SLOPE, inplace=True)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorP(nn.Module):
    """Period discriminator: the waveform folded to ``[B, 1, N/p, p]`` and 2-D convs over time."""

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        c = [max(int(n * width), 4) for n in (32, 128, 512, 1024, 1024)]
        ins = [1, *c[:-1]]
        strides = [3, 3, 3, 3, 1]
        self.convs = nn.ModuleList(
            wn_conv2d(i, o, (5, 1), (s, 1), padding=(get_padding(5, 1), 0))
            for i, o, s in zip(ins, c, strides)
        )
        self.conv_post = wn_conv2d(c[-1], 1, (3, 1), 1, padding=(1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x ``[B, 1, N]`` -> (logits ``[B, L]``, feature maps)."""
        b, c, n = x.shape
        if n % self.period:
            pad = self.period - n % self.period
            x = F.pad(x, (0, pad), "reflect")
            n = n + pad
        x = x.view(b, c, n // self.period, self.period)  # [B, 1, N/p, p]
        fmap = []
        for conv in self.convs:
            # The conv output is fresh and read by nothing else: in place, so one tensor serves
            # as the feature map and as what the next conv saves for backward.
            x = leaky_relu(conv(x), LRELU_SLOPE, inplace=True)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """``discriminators.0`` is the scale discriminator, then one per period."""

    def __init__(self, periods: Sequence[int], width: float = 1.0) -> None:
        super().__init__()
        self.periods = tuple(periods)
        self.discriminators = nn.ModuleList(
            [DiscriminatorS(width), *(DiscriminatorP(p, width) for p in periods)]
        )

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        """Score real ``y`` and generated ``y_hat`` (``[B, 1, N]`` each).

        Returns:
            ``(real logits, fake logits, real feature maps, fake feature maps)``, one entry per
            member discriminator.
        """
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def build_discriminator(version: str = "v2") -> MultiPeriodDiscriminator:
    """RVC's ``MultiPeriodDiscriminator`` (``v1``), ``…V2`` (``v2``), or ``tiny`` (v1 periods,
    channels / 16) for tests and the CPU demo."""
    if version in PERIODS:
        return MultiPeriodDiscriminator(PERIODS[version])
    if version == "tiny":
        return MultiPeriodDiscriminator(PERIODS["v1"], width=1 / 16)
    raise ValueError(f"unknown discriminator version {version!r}; choose v1, v2 or tiny")
