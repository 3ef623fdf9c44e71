"""HiFi-GAN decoders: ``Generator`` (no pitch) and ``GeneratorNSF`` (sine-excited, with pitch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.models.activations import LRELU_SLOPE, leaky_relu
from rvc_lora.models.commons import sequence_mask
from rvc_lora.models.modules import ResBlock1, ResBlock2
from rvc_lora.models.nn import init_normal, wn_conv_transpose1d
from rvc_lora.models.nsf import SourceModuleHnNSF


class Generator(nn.Module):
    """Latent ``z [B, C, T]`` -> waveform ``[B, 1, T * prod(upsample_rates)]``.

    ``conv_pre``, ``conv_post`` (no bias) and ``cond`` are plain convs; ``ups`` and the resblock
    convs are weight-normed. With ``nsf=True`` a sine source at F0 is added after every upsampling
    stage through ``noise_convs`` (RVC's ``GeneratorNSF``).
    """

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int = 0,
        sr: int | None = None,
        nsf: bool = False,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upp = math.prod(upsample_rates)
        self.upsample_rates = tuple(int(u) for u in upsample_rates)
        if nsf:
            if sr is None:
                raise ValueError("GeneratorNSF needs the sampling rate `sr`")
            self.m_source = SourceModuleHnNSF(sampling_rate=sr, harmonic_num=0)
            self.noise_convs = nn.ModuleList()
        else:
            self.m_source, self.noise_convs = None, None
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2

        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(wn_conv_transpose1d(2 * ch, ch, k, u, padding=(k - u) // 2))
            if self.noise_convs is not None:
                # Downsample the sample-rate excitation to this stage's rate: stride = the
                # product of the remaining upsampling factors.
                if i + 1 < len(upsample_rates):
                    s = math.prod(upsample_rates[i + 1 :])
                    self.noise_convs.append(
                        nn.Conv1d(1, ch, kernel_size=2 * s, stride=s, padding=s // 2)
                    )
                else:
                    self.noise_convs.append(nn.Conv1d(1, ch, kernel_size=1))
            for rk, rd in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, rk, rd))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1) if gin_channels else None
        for up in self.ups:
            init_normal(up)

    def forward(
        self,
        x: torch.Tensor,
        f0: torch.Tensor | None = None,
        g: torch.Tensor | None = None,
        n_res: int | None = None,
        source_noise: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        source_phase: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[B, C, T]``, f0 ``[B, T]`` Hz (NSF only), g ``[B, gin, 1]`` -> ``[B, 1, T*upp]``.

        ``n_res`` linearly resamples the latent to that many frames first (formant shift).
        ``source_noise`` ``[B, T*upp, 1]`` replaces the NSF source's RNG draw;
        ``source_phase`` ``[B]`` starts its sine at that phase (cycles) instead of 0.
        ``lengths`` ``[B]`` (frames): zero every conv's input past each row's length, as the
        conv's own zero padding does for that row alone, so a row of a padded batch decodes
        exactly as it would alone (the decoder has no masks otherwise: its biases spread into
        the padding and back). Samples past a row's end come out as zeros.
        """
        har = None
        if self.m_source is not None:
            if f0 is None:
                raise ValueError("this decoder is pitch-driven (NSF): pass f0 [B, T] in Hz")
            har = self.m_source(f0, self.upp, source_noise, source_phase)
            har = har.transpose(1, 2)  # [B, 1, T*upp]
            if n_res is not None and n_res * self.upp != har.shape[-1]:
                har = F.interpolate(har, size=n_res * self.upp, mode="linear")
        if n_res is not None and n_res != x.shape[-1]:
            if lengths is not None:
                raise ValueError("lengths (per-row masks) cannot be combined with n_res")
            x = F.interpolate(x, size=n_res, mode="linear")
        # Rows that all fill the batch need no masks (the same zeros as each row alone).
        ragged = lengths is not None and bool((lengths.to(x.device) < x.shape[-1]).any())
        masks = self._stage_masks(lengths, x) if ragged else None
        if masks is not None:
            x = x * masks[0]
            if har is not None:
                har = har * masks[-1]
        x = self.conv_pre(x)
        if g is not None and self.cond is not None:
            x = x + self.cond(g)
        # In place below: x is always a fresh result (conv_pre's output, the cond add, the
        # resblock average) that nothing else reads, forward or backward; the up conv then
        # saves the same tensor that the activation keeps.
        for i, up in enumerate(self.ups):
            x = leaky_relu(x, LRELU_SLOPE, inplace=True)
            x = up(x * masks[i] if masks is not None else x)
            if har is not None:
                x = x + self.noise_convs[i](har)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            mask = masks[i + 1] if masks is not None else None
            x = sum(block(x, mask) for block in blocks) / self.num_kernels
        # Default slope 0.01 here, not 0.1: RVC's final activation (RVC_FACTS.md pitfall 12).
        x = leaky_relu(x, 0.01, inplace=True)
        if masks is None:
            return torch.tanh(self.conv_post(x))
        return torch.tanh(self.conv_post(x * masks[-1])) * masks[-1]

    def _stage_masks(self, lengths: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 1, T * rate]`` masks at the rate of conv_pre and after each upsampling."""
        rates = [1]
        for u in self.upsample_rates:
            rates.append(rates[-1] * u)
        t = x.shape[-1]
        lengths = lengths.to(x.device)
        return [sequence_mask(lengths * r, t * r).unsqueeze(1).to(x.dtype) for r in rates]
