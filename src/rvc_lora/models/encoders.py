"""The prior (text) encoder over content features and the posterior encoder over spectrograms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.models.attentions import Encoder
from rvc_lora.models.commons import sequence_mask
from rvc_lora.models.modules import WN


class TextEncoder(nn.Module):
    """Content features (+ coarse pitch) -> prior statistics ``(m_p, logs_p)``.

    RVC's ``TextEncoder256``/``TextEncoder768``: ``emb_phone`` is a Linear over the HuBERT feature
    dimension (256 for v1, 768 for v2), ``emb_pitch`` an Embedding of 256 coarse-pitch bins.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        f0: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels, self.hidden_channels = out_channels, hidden_channels
        self.emb_phone = nn.Linear(in_channels, hidden_channels)
        self.emb_pitch = nn.Embedding(256, hidden_channels) if f0 else None
        self.encoder = Encoder(
            hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self,
        phone: torch.Tensor,
        pitch: torch.Tensor | None,
        lengths: torch.Tensor,
        skip_head: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """phone ``[B, T, D_in]``, pitch ``[B, T]`` (long, 1..255) -> m, logs ``[B, C, T]``, mask."""
        x = self.emb_phone(phone)
        if self.emb_pitch is not None:
            if pitch is None:
                raise ValueError("this model uses pitch (f0=True): pass coarse pitch [B, T]")
            x = x + self.emb_pitch(pitch)
        x = F.leaky_relu(x * math.sqrt(self.hidden_channels), 0.1)
        x = x.transpose(1, -1)  # [B, T, H] -> [B, H, T]
        x_mask = sequence_mask(lengths, x.size(2)).unsqueeze(1).to(x.dtype)  # [B, 1, T]
        x = self.encoder(x * x_mask, x_mask)
        if skip_head is not None:
            # Streaming crops after the transformer, so the kept frames saw their left context.
            x, x_mask = x[:, :, skip_head:], x_mask[:, :, skip_head:]
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> latent ``z`` (training only; stripped from exported models)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, y: torch.Tensor, lengths: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """y ``[B, spec, T]`` -> z, m, logs ``[B, C, T]`` and mask ``[B, 1, T]``."""
        y_mask = sequence_mask(lengths, y.size(2)).unsqueeze(1).to(y.dtype)
        h = self.enc(self.pre(y) * y_mask, y_mask, g=g)
        stats = self.proj(h) * y_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * y_mask
        return z, m, logs, y_mask
