"""Building blocks: the WaveNet stack (WN), HiFi-GAN residual blocks and the coupling flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# LRELU_SLOPE stays importable from here, as before it moved to activations.py.
from rvc_lora.models.activations import LRELU_SLOPE, leaky_relu
from rvc_lora.models.commons import gated_activation
from rvc_lora.models.nn import get_padding, init_normal, wn_conv1d


class WN(nn.Module):
    """Non-causal WaveNet: gated dilated convs with speaker conditioning and skip outputs.

    Keys: ``in_layers.{i}``, ``res_skip_layers.{i}`` (the last one has only skip channels) and
    ``cond_layer``, all weight-normed. Speaker conditioning ``g [B, gin, 1]`` is projected once to
    ``2 * hidden * n_layers`` channels and sliced per layer.
    """

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_channels, self.n_layers = hidden_channels, n_layers
        h = hidden_channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                wn_conv1d(
                    h,
                    2 * h,
                    kernel_size,
                    dilation=dilation,
                    padding=get_padding(kernel_size, dilation),
                )
            )
            out = 2 * h if i < n_layers - 1 else h
            self.res_skip_layers.append(wn_conv1d(h, out, 1))
        self.cond_layer = wn_conv1d(gin_channels, 2 * h * n_layers, 1) if gin_channels else None
        self.drop = nn.Dropout(p_dropout)

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x ``[B, H, T]``, x_mask ``[B, 1, T]``, g ``[B, gin, 1]`` -> skip sum ``[B, H, T]``."""
        h = self.hidden_channels
        output = torch.zeros_like(x)
        cond = self.cond_layer(g) if (g is not None and self.cond_layer is not None) else None
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            cond_i = cond[:, 2 * h * i : 2 * h * (i + 1)] if cond is not None else 0.0
            acts = self.drop(gated_activation(in_layer(x), cond_i, h))
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = (x + rs[:, :h]) * x_mask
                output = output + rs[:, h:]
            else:
                output = output + rs
        return output * x_mask


class ResBlock1(nn.Module):
    """HiFi-GAN ResBlock1: three (dilated conv, dilation-1 conv) pairs with residual adds."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            wn_conv1d(
                channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d)
            )
            for d in dilation
        )
        self.convs2 = nn.ModuleList(
            wn_conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size))
            for _ in dilation
        )
        for conv in (*self.convs1, *self.convs2):
            init_normal(conv)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, C, T]``, x_mask ``[B, 1, T]`` or None -> ``[B, C, T]``."""
        for c1, c2 in zip(self.convs1, self.convs2):
            # x is still needed by the residual add: out of place, keeping the output (which
            # c1 saves anyway) for backward instead of x.
            xt = leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            # A fresh conv output that only this activation reads: in place.
            xt = leaky_relu(c1(xt), LRELU_SLOPE, inplace=True)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c2(xt)
            if x_mask is not None:
                xt = xt * x_mask
            x = x + xt
        return x * x_mask if x_mask is not None else x


class ResBlock2(nn.Module):
    """HiFi-GAN ResBlock2 (resblock "2"): single dilated convs. No RVC config uses it."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)):
        super().__init__()
        self.convs = nn.ModuleList(
            wn_conv1d(
                channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d)
            )
            for d in dilation
        )
        for conv in self.convs:
            init_normal(conv)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, C, T]``, x_mask ``[B, 1, T]`` or None -> ``[B, C, T]``."""
        for conv in self.convs:
            # x feeds the residual add: out of place, saving the output that conv saves too.
            xt = leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            x = x + conv(xt)
        return x * x_mask if x_mask is not None else x


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: the second half is shifted by a WN function of the first."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"coupling channels must be even, got {channels}")
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half, 1)
        # Zero init makes every flow start as the identity, which stabilises early training.
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        h = self.enc(self.pre(x0) * x_mask, x_mask, g=g)
        m = self.post(h) * x_mask
        x1 = (x1 - m) * x_mask if reverse else m + x1 * x_mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    """Reverse the channel order so the next coupling layer transforms the other half."""

    def forward(self, x: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """``n_flows`` x [coupling, flip]; only the even indices of ``flows`` hold parameters."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                ResidualCouplingLayer(
                    channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels
                )
            )
            self.flows.append(Flip())

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> torch.Tensor:
        flows = reversed(self.flows) if reverse else self.flows
        for flow in flows:
            x = flow(x, x_mask, g=g, reverse=reverse)
        return x
