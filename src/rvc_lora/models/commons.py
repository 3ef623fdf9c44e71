"""Masks and segment slicing shared by the synthesizer's parts."""

from __future__ import annotations

import torch


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean mask ``[B, T]`` that is True for positions ``< lengths[b]``."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def slice_segments(x: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    """Cut ``size`` steps from the last axis of ``x`` ([B, ..., T]) at per-item ``starts`` [B]."""
    offsets = torch.arange(size, device=x.device)
    idx = starts.to(x.device).long().unsqueeze(1) + offsets  # [B, size]
    idx = idx.view(idx.shape[0], *([1] * (x.dim() - 2)), size).expand(*x.shape[:-1], size)
    return torch.gather(x, -1, idx)


def rand_slice_segments(
    x: torch.Tensor, lengths: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``size``-long window of each item, as RVC: start = floor(U[0,1) * (len - size + 1)).

    Args:
        x: ``[B, C, T]``.
        lengths: valid lengths ``[B]``; items shorter than ``size`` start at 0.
    Returns:
        ``(x_slice [B, C, size], starts [B])``.
    """
    max_start = (lengths - size + 1).clamp(min=1)
    starts = (torch.rand(x.shape[0], device=x.device) * max_start.to(x.device)).long()
    return slice_segments(x, starts, size), starts


def gated_activation(x: torch.Tensor, cond: torch.Tensor, channels: int) -> torch.Tensor:
    """WaveNet gate: tanh(first half) * sigmoid(second half) of ``x + cond`` ([B, 2C, T])."""
    a = x + cond
    return torch.tanh(a[:, :channels]) * torch.sigmoid(a[:, channels:])
