"""RVC's synthesizer (VITS-style): prior encoder, posterior encoder, flow, HiFi-GAN decoder.

One class covers RVC's four: ``SynthesizerTrnMs{256,768}NSFsid`` and their ``_nono`` twins,
selected by ``config.version`` and ``f0``. Attribute order follows RVC's, so a state dict lists
its keys in the same order as RVC's (``enc_p`` first for v1, last for v2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rvc_lora.models.commons import rand_slice_segments, slice_segments
from rvc_lora.models.encoders import PosteriorEncoder, TextEncoder
from rvc_lora.models.fast_decoder import can_decode_fast, decode_fast
from rvc_lora.models.generator import Generator
from rvc_lora.models.modules import ResidualCouplingBlock
from rvc_lora.models.presets import SynthConfig

# RVC fixes these structural choices in the class, not in the config list.
POSTERIOR = dict(kernel_size=5, dilation_rate=1, n_layers=16)
FLOW = dict(kernel_size=5, dilation_rate=1, n_layers=3, n_flows=4)
INFER_NOISE_SCALE = 0.66666
FLOW_CONTEXT = 24  # frames of left context infer keeps for the flow when streaming (RVC's)


@dataclass(frozen=True)
class InferNoise:
    """The standard-normal draws of one ``infer`` call, given instead of drawn from torch's RNG
    (the ONNX graph's noise inputs; parity tests).

    Attributes:
        prior: ``[B, inter_channels, T]``: the prior sample's noise, T = the frames ``enc_p``
            returns (after ``skip_head``'s crop when streaming).
        source: ``[B, T_dec * hop, 1]``: the NSF excitation's noise (f0 models), T_dec = the
            frames the decoder gets; None for models without pitch.
        phase: ``[B]``: the NSF sine's phase (cycles) at the first decoded sample, 0 when None
            (not random, but the other state a block of a stream must continue from).
    """

    prior: torch.Tensor
    source: torch.Tensor | None = None
    phase: torch.Tensor | None = None


def draw_infer_noise(
    model: Synthesizer | Any,
    batch: int,
    frames: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> InferNoise:
    """The noise ``model.infer`` would draw for ``batch`` x ``frames``, in its order (prior,
    then the NSF source), so with the same RNG state ``infer(noise=...)`` equals ``infer()``.

    ``model`` is anything with a ``config`` and ``f0`` (an ONNX voice too).
    """
    c = model.config
    prior = torch.randn(batch, c.inter_channels, frames, generator=generator, device=device)
    source = None
    if model.f0:
        n = frames * c.hop_length
        source = torch.randn(batch, n, 1, generator=generator, device=device)
    return InferNoise(prior, source)


class Synthesizer(nn.Module):
    """RVC generator ``G``.

    Args:
        config: shapes and sample rate (see :class:`SynthConfig`).
        f0: pitch-driven model (NSF decoder + pitch embedding) or not ("nono").
    """

    def __init__(self, config: SynthConfig, f0: bool = True) -> None:
        super().__init__()
        self.config, self.f0 = config, bool(f0)
        c = config
        enc_p = TextEncoder(
            c.feature_dim,
            c.inter_channels,
            c.hidden_channels,
            c.filter_channels,
            c.n_heads,
            c.n_layers,
            c.kernel_size,
            c.p_dropout,
            f0=self.f0,
        )
        if c.version == "v1":
            self.enc_p = enc_p
        self.dec = Generator(
            c.inter_channels,
            c.resblock,
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
            c.upsample_rates,
            c.upsample_initial_channel,
            c.upsample_kernel_sizes,
            gin_channels=c.gin_channels,
            sr=c.sr,
            nsf=self.f0,
        )
        self.enc_q: PosteriorEncoder | None = PosteriorEncoder(
            c.spec_channels,
            c.inter_channels,
            c.hidden_channels,
            gin_channels=c.gin_channels,
            **POSTERIOR,
        )
        self.flow = ResidualCouplingBlock(
            c.inter_channels, c.hidden_channels, gin_channels=c.gin_channels, **FLOW
        )
        self.emb_g = nn.Embedding(c.spk_embed_dim, c.gin_channels)
        if c.version == "v2":
            self.enc_p = enc_p  # v2 classes rebuild enc_p after the rest, so it comes last

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def sr(self) -> int:
        return self.config.sr

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def remove_posterior(self) -> None:
        """Drop ``enc_q`` (inference only), as RVC does for exported models."""
        self.enc_q = None

    def _speaker(self, sid: torch.Tensor) -> torch.Tensor:
        return self.emb_g(sid).unsqueeze(-1)  # [B, gin, 1]

    def forward(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        spec: torch.Tensor,
        spec_lengths: torch.Tensor,
        sid: torch.Tensor,
    ):
        """Training pass on a random ``segment_size`` window.

        Args:
            phone: content features ``[B, T, D_in]`` at 100 frames/s.
            phone_lengths, spec_lengths: ``[B]``.
            pitch: coarse pitch ``[B, T]`` (long, 1..255), or None for f0=False models.
            pitchf: F0 in Hz ``[B, T]``, or None for f0=False models.
            spec: linear magnitude spectrogram ``[B, spec_channels, T]``.
            sid: speaker ids ``[B]``.
        Returns:
            ``(audio [B, 1, segment_size*hop], ids_slice [B], x_mask, y_mask,
            (z, z_p, m_p, logs_p, m_q, logs_q))``.
        """
        if self.enc_q is None:
            raise RuntimeError("enc_q was removed (inference model); training needs it")
        g = self._speaker(sid)
        m_p, logs_p, x_mask = self.enc_p(phone, pitch, phone_lengths)
        z, m_q, logs_q, y_mask = self.enc_q(spec, spec_lengths, g=g)
        z_p = self.flow(z, y_mask, g=g)
        seg = self.config.segment_size
        z_slice, ids_slice = rand_slice_segments(z, spec_lengths, seg)
        f0_slice = slice_segments(pitchf, ids_slice, seg) if self.f0 else None
        o = self.dec(z_slice, f0_slice, g=g)
        return o, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q)

    @torch.no_grad()
    def infer(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None = None,
        pitchf: torch.Tensor | None = None,
        sid: torch.Tensor | None = None,
        skip_head: int | None = None,
        return_length: int | None = None,
        return_length2: int | None = None,
        crop: tuple[int, int] | None = None,
        fast: bool = True,
        noise: InferNoise | None = None,
        row_masks: bool = False,
    ):
        """Convert content features to audio (RVC's ``infer``).

        Args:
            phone: ``[B, T, D_in]``; pitch/pitchf ``[B, T]`` (f0 models); sid ``[B]`` (default 0).
            skip_head, return_length: streaming crop in frames (24 frames of flow context kept).
            return_length2: resample the latent to this many frames (formant shift).
            crop: ``(head, tail)``: drop that many frames of output at each end. The prior,
                flow and NSF excitation still run at full length (same random draws); the fast
                decoder then decodes only the kept frames plus its receptive field. Not with
                ``skip_head``/``return_length`` or ``return_length2``.
            fast: decode with :func:`~rvc_lora.models.fast_decoder.decode_fast` (same output
                within float rounding; autograd off). False runs the decoder module itself.
            noise: the random draws to use instead of torch's RNG (:func:`draw_infer_noise`).
            row_masks: decode every row of a padded batch exactly as it would decode alone
                (``Generator``'s ``lengths``; module path), with zeros past each row's end.
                RVC does not: its decoder lets the padding leak into the last frames of the
                shorter rows. Not with streaming or ``return_length2``.
        Returns:
            ``(audio [B, 1, T_out*hop], x_mask, (z, z_p, m_p, logs_p))``; with ``crop``,
            ``T_out = T - head - tail`` (x_mask and the latents stay full length).
        """
        streaming = skip_head is not None and return_length is not None
        if crop is not None and (streaming or return_length2 is not None):
            raise ValueError("crop cannot be combined with skip_head/return_length/return_length2")
        if crop is not None:
            _check_crop(crop)
        if sid is None:
            sid = torch.zeros(phone.shape[0], dtype=torch.long, device=phone.device)
        g = self._speaker(sid)
        if streaming:
            head = int(skip_head)
            flow_head = max(head - FLOW_CONTEXT, 0)
            m_p, logs_p, x_mask = self.enc_p(phone, pitch, phone_lengths, skip_head=flow_head)
            z_p = (m_p + torch.exp(logs_p) * _prior_noise(m_p, noise) * INFER_NOISE_SCALE) * x_mask
            z = self.flow(z_p, x_mask, g=g, reverse=True)
            keep = slice(head - flow_head, head - flow_head + int(return_length))
            z, x_mask = z[:, :, keep], x_mask[:, :, keep]
            if pitchf is not None:
                pitchf = pitchf[:, head : head + int(return_length)]
        else:
            m_p, logs_p, x_mask = self.enc_p(phone, pitch, phone_lengths)
            z_p = (m_p + torch.exp(logs_p) * _prior_noise(m_p, noise) * INFER_NOISE_SCALE) * x_mask
            z = self.flow(z_p, x_mask, g=g, reverse=True)
        f0 = pitchf if self.f0 else None
        source = noise.source if (noise is not None and self.f0) else None
        phase = noise.phase if (noise is not None and self.f0) else None
        # Under autocast the module path keeps autocast's per-op dtypes (the fast path's fused
        # oneDNN ops take one dtype); validation of an AMP run comes here.
        autocast = torch.is_autocast_enabled(z.device.type)
        if row_masks and (streaming or return_length2 is not None):
            raise ValueError("row_masks cannot be combined with streaming or return_length2")
        lengths = phone_lengths if row_masks else None
        fast = fast and not row_masks and not autocast and not torch.is_grad_enabled()
        if fast and can_decode_fast(self.dec):
            o = decode_fast(self.dec, z * x_mask, f0, g=g, n_res=return_length2, crop=crop,
                            source_noise=source, source_phase=phase)  # fmt: skip
        else:
            o = self.dec(z * x_mask, f0, g=g, n_res=return_length2, source_noise=source,
                         lengths=lengths, source_phase=phase)  # fmt: skip
            if crop is not None:
                o = crop_frames(o, crop, self.dec.upp)
        return o, x_mask, (z, z_p, m_p, logs_p)


def _check_crop(crop: tuple[int, int]) -> None:
    if min(crop) < 0:
        raise ValueError(f"crop: frames to drop must be >= 0 each side, got {crop}")


def crop_frames(audio: torch.Tensor, crop: tuple[int, int], hop: int) -> torch.Tensor:
    """``audio [..., T*hop]`` without ``crop = (head, tail)`` frames at its two ends."""
    _check_crop(crop)
    head, tail = int(crop[0]), int(crop[1])
    return audio[..., head * hop : max(audio.shape[-1] - tail * hop, head * hop)]


def _prior_noise(m_p: torch.Tensor, noise: InferNoise | None) -> torch.Tensor:
    if noise is None:
        return torch.randn_like(m_p)
    if noise.prior.shape != m_p.shape:
        raise ValueError(
            f"prior noise: expected shape {list(m_p.shape)} [B, inter_channels, T], "
            f"got {list(noise.prior.shape)}"
        )
    return noise.prior.to(m_p.dtype)


def build_synthesizer(preset: str | SynthConfig, f0: bool = True) -> Synthesizer:
    """Build an RVC synthesizer from a preset name (``v1_32k`` … ``v2_48k``, ``tiny``) or config."""
    from rvc_lora.models.presets import get_preset

    config = get_preset(preset) if isinstance(preset, str) else preset
    return Synthesizer(config, f0=f0)
