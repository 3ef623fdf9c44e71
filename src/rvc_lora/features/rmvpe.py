"""RMVPE pitch estimator, loadable from RVC's ``rmvpe.pt`` key-for-key (RVC_FACTS.md §7.1).

Audio (16 kHz) -> 128-bin HTK log-mel (n_fft 1024, hop 160, ``center=True``) -> U-Net over
(time, frequency) -> 3 channels x 128 bins per frame -> BiGRU -> 360 sigmoid saliences per frame,
20 cents apart from about 31.7 Hz. Decoding takes a salience-weighted mean of cents over the
9 bins around the peak; frames whose peak salience is at most ``thred`` are unvoiced (0 Hz).

Module names follow RVC's (``unet.encoder.layers.0.conv.0.conv.0.weight``, ``fc.0.gru.*``,
``fc.1.*``) so that the bare fp16 state dict in ``rmvpe.pt`` loads strictly. Long inputs are run
in one pass, as RVC does (no chunking: the BiGRU sees the whole track, so chunks would change the
output); peak memory grows linearly, about 75 MB per 10 s of audio in float32 on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rvc_lora.features.weights import require_weights
from rvc_lora.models.checkpoint import load_state_strict
from rvc_lora.spectral import mel_basis
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FFT = 1024
N_MELS = 128
MEL_FMIN, MEL_FMAX = 30.0, 8000.0
N_CLASSES = 360
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (re 10 Hz): about 31.7 Hz
DEFAULT_THRESHOLD = 0.03

_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class RMVPEConfig:
    """Sizes of the RMVPE network. The defaults are RVC's ``E2E(4, 1, (2, 2))``.

    Attributes:
        n_blocks: ConvBlockRes per encoder/intermediate/decoder block.
        n_gru: BiGRU layers in the head.
        kernel_size: pooling (encoder) and stride (decoder) over (time, frequency).
        en_de_layers: encoder/decoder depth; time is padded to ``kernel_size[0] ** en_de_layers``.
        inter_layers: intermediate blocks (without pooling).
        en_out_channels: channels of the first encoder block; doubled per level.
        gru_hidden: hidden size of each GRU direction (RVC: 256).
    """

    n_blocks: int = 4
    n_gru: int = 1
    kernel_size: tuple[int, int] = (2, 2)
    en_de_layers: int = 5
    inter_layers: int = 4
    in_channels: int = 1
    en_out_channels: int = 16
    gru_hidden: int = 256

    def __post_init__(self) -> None:
        ints = (
            "n_blocks",
            "n_gru",
            "en_de_layers",
            "inter_layers",
            "in_channels",
            "en_out_channels",
            "gru_hidden",
        )
        bad = [name for name in ints if int(getattr(self, name)) < 1]
        if bad:
            raise ValueError(f"RMVPEConfig: {', '.join(bad)} must be >= 1")
        if N_MELS % (self.kernel_size[1] ** self.en_de_layers):
            raise ValueError(
                f"RMVPEConfig: {N_MELS} mel bins are not divisible by kernel_size[1]**en_de_layers "
                f"= {self.kernel_size[1] ** self.en_de_layers}; use fewer layers"
            )

    @property
    def time_multiple(self) -> int:
        """Frames are zero-padded to a multiple of this before the U-Net (RVC: 32)."""
        return self.kernel_size[0] ** self.en_de_layers

    @classmethod
    def tiny(cls) -> RMVPEConfig:
        """Same structure, a few thousand parameters: for tests on CPU."""
        return cls(n_blocks=1, inter_layers=1, en_out_channels=2, gru_hidden=8)


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)


class ConvBlockRes(nn.Module):
    """Two (3x3 conv -> BN -> ReLU) plus a residual; 1x1 conv (with bias) when widths differ."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        # Indices 0/1 and 3/4 are the conv/BN pairs of RVC's keys; 2 and 5 are the ReLUs.
        self.conv = nn.Sequential(
            _conv3x3(c_in, c_out),
            nn.BatchNorm2d(c_out, momentum=_BN_MOMENTUM),
            nn.ReLU(),
            _conv3x3(c_out, c_out),
            nn.BatchNorm2d(c_out, momentum=_BN_MOMENTUM),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c_in, T, F]`` -> ``[B, c_out, T, F]``."""
        return self.conv(x) + (x if self.shortcut is None else self.shortcut(x))


class ResEncoderBlock(nn.Module):
    """``n_blocks`` ConvBlockRes, then optional average pooling (its input is the skip)."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, pool: tuple[int, int] | None) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [ConvBlockRes(c_in if i == 0 else c_out, c_out) for i in range(n_blocks)]
        )
        self.pool = nn.AvgPool2d(pool) if pool is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv:
            x = block(x)
        return x


class Encoder(nn.Module):
    """Input BatchNorm, then blocks that double the channels and pool (time, freq)."""

    def __init__(self, cfg: RMVPEConfig) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cfg.in_channels, momentum=_BN_MOMENTUM)
        widths = [cfg.in_channels] + [cfg.en_out_channels * 2**i for i in range(cfg.en_de_layers)]
        self.layers = nn.ModuleList(
            [
                ResEncoderBlock(widths[i], widths[i + 1], cfg.n_blocks, cfg.kernel_size)
                for i in range(cfg.en_de_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[B, 1, T, 128]`` -> (``[B, C_last, T/32, 4]``, skips from shallow to deep)."""
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            x = layer(x)
            skips.append(x)
            x = layer.pool(x)
        return x, skips


class ResDecoderBlock(nn.Module):
    """Transposed conv upsampling (-> BN -> ReLU), concatenate the skip, ConvBlockRes stack."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, stride: tuple[int, int]) -> None:
        super().__init__()
        # output_padding makes the upsampled size exactly stride x the input (as RVC).
        out_pad = (0, 1) if tuple(stride) == (1, 2) else (1, 1)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(
                c_in,
                c_out,
                kernel_size=3,
                stride=stride,
                padding=1,
                output_padding=out_pad,
                bias=False,
            ),
            nn.BatchNorm2d(c_out, momentum=_BN_MOMENTUM),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList(
            [ConvBlockRes(2 * c_out if i == 0 else c_out, c_out) for i in range(n_blocks)]
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.conv1(x), skip], dim=1)  # [B, 2*c_out, T', F']
        for block in self.conv2:
            x = block(x)
        return x


class Intermediate(nn.Module):
    """Blocks without pooling at the bottom of the U-Net (widen x2 once)."""

    def __init__(self, c_in: int, c_out: int, n_inters: int, n_blocks: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                ResEncoderBlock(c_in if i == 0 else c_out, c_out, n_blocks, None)
                for i in range(n_inters)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Decoder(nn.Module):
    def __init__(self, c_in: int, n_decoders: int, n_blocks: int, stride: tuple[int, int]) -> None:
        super().__init__()
        widths = [c_in // 2**i for i in range(n_decoders + 1)]
        self.layers = nn.ModuleList(
            [ResDecoderBlock(widths[i], widths[i + 1], n_blocks, stride) for i in range(n_decoders)]
        )

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for layer, skip in zip(self.layers, reversed(skips)):
            x = layer(x, skip)
        return x


class DeepUnet(nn.Module):
    def __init__(self, cfg: RMVPEConfig) -> None:
        super().__init__()
        deepest = cfg.en_out_channels * 2 ** (cfg.en_de_layers - 1)
        self.encoder = Encoder(cfg)
        self.intermediate = Intermediate(deepest, 2 * deepest, cfg.inter_layers, cfg.n_blocks)
        self.decoder = Decoder(2 * deepest, cfg.en_de_layers, cfg.n_blocks, cfg.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T, 128]`` -> ``[B, en_out_channels, T, 128]`` (T a multiple of 32)."""
        x, skips = self.encoder(x)
        return self.decoder(self.intermediate(x), skips)


class BiGRU(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, num_layers=n_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class E2E(nn.Module):
    """The RMVPE network: log-mel ``[B, 128, T]`` -> salience ``[B, T, 360]`` in (0, 1)."""

    def __init__(self, config: RMVPEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RMVPEConfig()
        self.unet = DeepUnet(cfg)
        self.cnn = nn.Conv2d(cfg.en_out_channels, 3, kernel_size=3, padding=1)
        self.fc = nn.Sequential(
            BiGRU(3 * N_MELS, cfg.gru_hidden, cfg.n_gru),
            nn.Linear(2 * cfg.gru_hidden, N_CLASSES),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Args: mel ``[B, 128, T]``, T a multiple of ``config.time_multiple``."""
        x = mel.transpose(1, 2).unsqueeze(1)  # [B, 1, T, 128]
        x = self.cnn(self.unet(x))  # [B, 3, T, 128]
        x = x.transpose(1, 2).flatten(2)  # [B, T, 3*128], channel-major per frame as RVC
        return self.fc(x)


def decode_salience(
    salience: np.ndarray | torch.Tensor, thred: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Salience ``[T, 360]`` -> F0 in Hz ``[T]`` (float64; 0 = unvoiced), as RVC decodes.

    Per frame: c = argmax; cents = salience-weighted mean of bin cents over c-4..c+4 (bins
    outside 0..359 count as salience 0 at 0 cents); cents = 0 if the peak salience <= ``thred``;
    f0 = 10 * 2^(cents/1200), and exactly 10 Hz (cents 0) becomes 0.
    """
    if isinstance(salience, torch.Tensor):
        salience = salience.detach().float().cpu().numpy()
    sal = np.asarray(salience, dtype=np.float32)
    if sal.ndim != 2 or sal.shape[1] != N_CLASSES:
        raise ValueError(f"decode_salience: expected [T, {N_CLASSES}], got {list(sal.shape)}")
    cents_map = np.pad(CENTS_PER_BIN * np.arange(N_CLASSES) + CENTS_OFFSET, (4, 4))  # [368]
    padded = np.pad(sal, ((0, 0), (4, 4)))  # [T, 368]
    window = np.argmax(sal, axis=1)[:, None] + np.arange(9)[None, :]  # [T, 9] into padded
    weights = np.take_along_axis(padded, window, axis=1)  # [T, 9] float32
    with np.errstate(invalid="ignore", divide="ignore"):  # all-zero frames: peak <= thred
        cents = np.sum(weights * cents_map[window], axis=1) / np.sum(weights, axis=1)
    cents[np.max(sal, axis=1) <= thred] = 0
    f0 = 10 * 2 ** (cents / 1200)
    f0[f0 == 10] = 0
    return f0


class RMVPE:
    """A ready-to-run RMVPE: mel front end, network in eval mode, decoding.

    Args:
        net: the network (weights loaded); moved to ``device`` and ``dtype``.
        dtype: network precision. The log-mel is always computed in float32 and then cast
            (RVC's fp16 mode casts before the log; the difference is below fp16 resolution).
    """

    def __init__(
        self, net: E2E, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.net = net.to(device=self.device, dtype=dtype).eval()
        self._basis = mel_basis(
            SAMPLE_RATE, N_FFT, N_MELS, MEL_FMIN, MEL_FMAX, htk=True, device=self.device
        )  # [128, 513]
        self._window = torch.hann_window(N_FFT, device=self.device)

    def mel(self, wav16k: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, 128, N // 160 + 1]`` of ``[B, N]`` float audio (``center=True``)."""
        wav = wav16k.to(self.device, torch.float32)
        if wav.shape[-1] <= N_FFT // 2:
            # torch.stft's reflect padding needs more than n_fft/2 samples (RVC errors out
            # here); zero-extend and keep the frame count of the real length.
            frames = wav.shape[-1] // HOP_LENGTH + 1
            wav = nn.functional.pad(wav, (0, N_FFT // 2 + 1 - wav.shape[-1]))
        else:
            frames = None
        spec = torch.stft(
            wav,
            N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=self._window,
            center=True,
            return_complex=True,
        )
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2))  # [B, 513, T], no eps
        mel = torch.log(torch.clamp(torch.matmul(self._basis, magnitude), min=1e-5))
        return mel if frames is None else mel[..., :frames]

    @torch.inference_mode()
    def salience(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, 128, T]`` -> ``[B, T, 360]`` float32; pads T to a multiple of 32, then crops."""
        frames = mel.shape[-1]
        multiple = self.net.config.time_multiple
        pad = -frames % multiple
        mel = nn.functional.pad(mel, (0, pad))  # zeros, as RVC (not the log of silence)
        out = self.net(mel.to(self.device, self.dtype))
        return out[:, :frames].float()

    def infer_from_audio(
        self, wav16k: np.ndarray | torch.Tensor, thred: float = DEFAULT_THRESHOLD
    ) -> np.ndarray:
        """F0 of mono 16 kHz audio ``[N]`` -> Hz ``[N // 160 + 1]`` float64 (0 = unvoiced)."""
        wav = torch.as_tensor(
            np.asarray(wav16k) if not isinstance(wav16k, torch.Tensor) else wav16k
        )
        if wav.dim() != 1:
            raise ValueError(f"RMVPE expects mono audio [N], got shape {list(wav.shape)}")
        if wav.numel() == 0:
            return np.zeros(1)
        sal = self.salience(self.mel(wav.unsqueeze(0)))  # [1, T, 360]
        return decode_salience(sal[0], thred)


def load_rmvpe(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    config: RMVPEConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> RMVPE:
    """Load RVC's ``rmvpe.pt`` (a bare, usually fp16, state dict) strictly.

    Args:
        path: the weights file.
        device: where to run.
        config: network sizes; RVC's by default (only tests use others).
        dtype: network precision after loading (fp16 weights are cast; default float32).
    Raises:
        CheckpointError: the file is missing/unreadable, or its keys or shapes do not match.
    """
    path = require_weights(path, "RMVPE")
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: expected a bare RMVPE state dict, got {type(state).__name__}"
        )
    net = E2E(config)
    load_state_strict(net, state, source=str(path))  # copies and casts fp16 -> fp32
    return RMVPE(net, device, dtype)
