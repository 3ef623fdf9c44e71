"""RVC's text-encoder transformer: post-LN blocks with windowed relative-position attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, T]``; parameters named gamma/beta as in RVC."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)  # [B, T, C]
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class RelativeMultiHeadAttention(nn.Module):
    """Self-attention with relative key/value embeddings shared by all heads (window ±w)."""

    def __init__(self, channels: int, n_heads: int, p_dropout: float = 0.0, window_size: int = 10):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.window_size = n_heads, window_size
        self.k_channels = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(p_dropout)
        std = self.k_channels**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, T]``, attn_mask ``[B, 1, T, T]`` -> ``[B, C, T]``."""
        b, c, t = x.shape
        h, d = self.n_heads, self.k_channels
        # [B, C, T] -> [B, h, T, d]
        q = self.conv_q(x).view(b, h, d, t).transpose(2, 3)
        k = self.conv_k(x).view(b, h, d, t).transpose(2, 3)
        v = self.conv_v(x).view(b, h, d, t).transpose(2, 3)
        q = q / math.sqrt(d)
        scores = q @ k.transpose(-2, -1)  # [B, h, T, T]
        rel_k = self._window(self.emb_rel_k, t)  # [1, 2T-1, d]
        rel_logits = q @ rel_k.unsqueeze(0).transpose(-2, -1)  # [B, h, T, 2T-1]
        scores = scores + _relative_to_absolute(rel_logits)
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        p = self.drop(F.softmax(scores, dim=-1))
        out = p @ v  # [B, h, T, d]
        rel_v = self._window(self.emb_rel_v, t)
        out = out + _absolute_to_relative(p) @ rel_v.unsqueeze(0)
        out = out.transpose(2, 3).reshape(b, c, t)  # [B, h, d, T] -> [B, C, T]
        return self.conv_o(out)

    def _window(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        """Relative embeddings for offsets -(length-1)..(length-1): ``[1, 2*length-1, d]``.

        Offsets beyond the window get zero embeddings. Padding by ``length`` each side (not by
        the ``length - window - 1`` that suffices) keeps the code free of branches on the
        length, so a traced graph (ONNX export) stays right at every length.
        """
        emb = F.pad(emb, (0, 0, length, length))  # offset 0 now sits at window_size + length
        start = self.window_size + 1
        return emb[:, start : start + 2 * length - 1]


def _relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
    """``[B, h, T, 2T-1]`` indexed by relative offset -> ``[B, h, T, T]`` by key position."""
    b, h, t, _ = x.shape
    x = F.pad(x, (0, 1))  # [B, h, T, 2T]
    x = F.pad(x.reshape(b, h, t * 2 * t), (0, t - 1))  # skew trick: rows shift by one
    return x.view(b, h, t + 1, 2 * t - 1)[:, :, :t, t - 1 :]


def _absolute_to_relative(x: torch.Tensor) -> torch.Tensor:
    """``[B, h, T, T]`` by key position -> ``[B, h, T, 2T-1]`` by relative offset."""
    b, h, t, _ = x.shape
    x = F.pad(x, (0, t - 1))  # [B, h, T, 2T-1]
    x = F.pad(x.reshape(b, h, t * (2 * t - 1)), (t, 0))
    return x.view(b, h, t, 2 * t)[:, :, :, 1:]


class FeedForward(nn.Module):
    """Two kernel-k convolutions with ReLU and 'same' padding, masked before each conv."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, p_dropout: float):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.pad(x * x_mask, self.pad))
        x = self.drop(torch.relu(x))
        x = self.conv_2(F.pad(x * x_mask, self.pad))
        return x * x_mask


class Encoder(nn.Module):
    """Stack of post-LN transformer blocks (attention, then FFN), as in RVC/VITS."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 10,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList(
            RelativeMultiHeadAttention(hidden_channels, n_heads, p_dropout, window_size)
            for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(
            ChannelLayerNorm(hidden_channels) for _ in range(n_layers)
        )
        self.ffn_layers = nn.ModuleList(
            FeedForward(hidden_channels, filter_channels, kernel_size, p_dropout)
            for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(
            ChannelLayerNorm(hidden_channels) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, T]``, x_mask ``[B, 1, T]`` -> ``[B, C, T]``."""
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * x_mask
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2
        ):
            x = norm1(x + self.drop(attn(x, attn_mask)))
            x = norm2(x + self.drop(ffn(x, x_mask)))
        return x * x_mask
