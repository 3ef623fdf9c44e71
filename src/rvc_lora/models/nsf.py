"""Neural source filter excitation: a sine at the F0 plus noise, with no parameters but one Linear."""

from __future__ import annotations

import math

import torch
from torch import nn


class SineGen(nn.Module):
    """Sine excitation at F0 (and harmonics), noise in unvoiced regions.

    The phase accumulates f0/sr per sample. Per-frame start phases are summed in float64 and
    wrapped to [0, 1), so minutes of audio do not lose precision in float32, and the within-frame
    ramp is computed directly (RVC 20240604 does the same to avoid a cumsum over all samples).
    """

    def __init__(
        self,
        sampling_rate: int,
        harmonic_num: int = 0,
        sine_amp: float = 0.1,
        noise_std: float = 0.003,
        voiced_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.sampling_rate, self.dim = sampling_rate, harmonic_num + 1
        self.sine_amp, self.noise_std = sine_amp, noise_std
        self.voiced_threshold = voiced_threshold

    def forward(
        self,
        f0: torch.Tensor,
        upp: int,
        noise: torch.Tensor | None = None,
        phase: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 ``[B, T]`` in Hz (0 = unvoiced) -> (sine ``[B, T*upp, H]``, uv ``[B, T*upp, 1]``).

        ``noise`` ``[B, T*upp, H]``, standard normal, replaces the draw from torch's RNG (the
        ONNX graph takes it as an input). ``phase`` ``[B]``: the fundamental's phase (cycles) at
        the first sample, 0 when None; streaming carries it from block to block.
        """
        f0 = f0.float()
        harmonics = torch.arange(1, self.dim + 1, device=f0.device, dtype=f0.dtype)
        rad = f0.unsqueeze(-1) * harmonics / self.sampling_rate  # cycles per sample [B, T, H]
        start = torch.cumsum(rad.double() * upp, dim=1) - rad.double() * upp
        if phase is not None:
            start = start + phase.double().view(-1, 1, 1) * harmonics.double()
        start = torch.remainder(start, 1.0).to(rad.dtype)  # phase at each frame start [B, T, H]
        ramp = torch.arange(1, upp + 1, device=f0.device, dtype=f0.dtype).view(1, 1, upp, 1)
        phase = start.unsqueeze(2) + rad.unsqueeze(2) * ramp  # [B, T, upp, H]
        b, t = f0.shape
        phase = phase.reshape(b, t * upp, self.dim)
        sine = self.sine_amp * torch.sin(2 * math.pi * phase)
        uv = (f0 > self.voiced_threshold).to(sine.dtype)
        uv = uv.unsqueeze(-1).repeat_interleave(upp, dim=1)  # [B, T*upp, 1]
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        if noise is None:
            noise = torch.randn_like(sine)
        elif noise.shape != sine.shape:
            raise ValueError(
                f"source noise: expected shape {list(sine.shape)} [B, T*upp, harmonics], "
                f"got {list(noise.shape)}"
            )
        return sine * uv + noise_amp * noise.to(sine.dtype), uv


class SourceModuleHnNSF(nn.Module):
    """Merge the sine harmonics into one excitation channel: tanh(Linear(H -> 1))."""

    def __init__(
        self,
        sampling_rate: int,
        harmonic_num: int = 0,
        sine_amp: float = 0.1,
        noise_std: float = 0.003,
        voiced_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, noise_std, voiced_threshold)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def forward(
        self,
        f0: torch.Tensor,
        upp: int,
        noise: torch.Tensor | None = None,
        phase: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """f0 ``[B, T]`` -> excitation ``[B, T*upp, 1]``; ``noise``, ``phase`` as in
        :class:`SineGen`."""
        sine, _ = self.l_sin_gen(f0, upp, noise, phase)
        sine = sine.to(self.l_linear.weight.dtype)
        return torch.tanh(self.l_linear(sine))
