"""FCPE pitch estimator, loadable from the official ``fcpe_c_v001.pt`` key-for-key.

FCPE ("Fast Context-based Pitch Estimation", CNChTu, MIT) as shipped in the ``torchfcpe`` 0.0.4
wheel; ``rvc-lora download fcpe`` extracts that file. We do not import ``torchfcpe`` (it imports
torchaudio at import time); this module reads its checkpoint with its own code:

16 kHz audio -> 128-bin Slaney log-mel (n_fft = window = 1024, hop 160, ``center=False`` with
432 samples of reflect padding each side) -> two convolutions with a GroupNorm -> 6 conformer
convolution blocks (the released model has attention switched off, ``conv_only``) -> LayerNorm ->
weight-normed linear -> 360 sigmoid saliences per 10 ms frame, 20 cents apart from 32.70 Hz.
Decoding takes the salience-weighted mean of the cents of the 9 bins around the peak; a frame
whose peak salience is at most ``threshold`` (0.006, as RVC and Applio call it) is unvoiced.

The GroupNorm normalises over the whole track, so an F0 frame depends on all of its input: a
batch holds tracks of one length only (:meth:`FCPE.infer_batch` groups them), never padded ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rvc_lora.features.weights import require_weights
from rvc_lora.models.checkpoint import check_state_fits
from rvc_lora.spectral import mel_basis
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

SAMPLE_RATE = 16000
HOP_LENGTH = 160
DEFAULT_THRESHOLD = 0.006
LOCAL_BINS = 9  # the peak and 4 bins each side
_LOG_FLOOR = 1e-5
# Upper bounds on n_mels, out_dims, hidden, n_layers: far above any FCPE, far below a size that
# would exhaust memory before the weights are checked.
_SIZE_CAPS = (1024, 4096, 8192, 256)
_FIX = "get fcpe_c_v001.pt with `rvc-lora download fcpe`"
_MAGNITUDE_EPS = 1e-9


@dataclass(frozen=True)
class FCPEConfig:
    """Sizes and ranges of an FCPE network; the defaults are ``fcpe_c_v001.pt``'s.

    Attributes:
        n_mels, n_fft, win_size, fmin, fmax: the log-mel front end (16 kHz, hop 160).
        out_dims: salience bins (20 cents apart between ``f0_min`` and ``f0_max``).
        hidden: channels of the encoder.
        n_layers: conformer convolution blocks.
        f0_min, f0_max: the bins' range in Hz.
    """

    n_mels: int = 128
    n_fft: int = 1024
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0
    out_dims: int = 360
    hidden: int = 512
    n_layers: int = 6
    f0_min: float = 32.70
    f0_max: float = 1975.5

    def cents_table(self) -> torch.Tensor:
        """Cents (re 10 Hz) of each salience bin ``[out_dims]``, as the network was trained."""
        lo, hi = (1200.0 * np.log2(f / 10.0) for f in (self.f0_min, self.f0_max))
        return torch.linspace(float(lo), float(hi), self.out_dims)


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _DepthwiseConv(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ConvBlock(nn.Module):
    """Conformer convolution module: LN, pointwise conv + GLU, depthwise conv (31), SiLU,
    pointwise conv; ``[B, T, C] -> [B, T, C]``. Indices match the checkpoint's ``net.N``."""

    def __init__(self, dim: int, expansion: int = 2, kernel: int = 31) -> None:
        super().__init__()
        inner = dim * expansion
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            _Transpose(),
            nn.Conv1d(dim, 2 * inner, 1),
            nn.GLU(dim=1),
            _DepthwiseConv(inner, kernel),
            nn.SiLU(),
            nn.Conv1d(inner, dim, 1),
            _Transpose(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conformer = _ConvBlock(dim)
        # Only the attention branch used this norm; the released model has no attention, but its
        # state dict still carries the norm's weights, so the module exists for strict loading.
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conformer(x)


class _Encoder(nn.Module):
    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.encoder_layers = nn.ModuleList(_EncoderLayer(dim) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder_layers:
            x = layer(x)
        return x


class FCPENet(nn.Module):
    """Log-mel ``[B, T, n_mels]`` -> saliences ``[B, T, out_dims]`` in (0, 1)."""

    def __init__(self, config: FCPEConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or FCPEConfig()
        self.input_stack = nn.Sequential(
            nn.Conv1d(c.n_mels, c.hidden, 3, padding=1),
            nn.GroupNorm(4, c.hidden),
            nn.LeakyReLU(),
            nn.Conv1d(c.hidden, c.hidden, 3, padding=1),
        )
        self.net = _Encoder(c.hidden, c.n_layers)
        self.norm = nn.LayerNorm(c.hidden)
        # Stored weight-normed (weight_g, weight_v); the loader folds them into one weight.
        self.output_proj = nn.Linear(c.hidden, c.out_dims)
        self.register_buffer("cent_table", c.cents_table())
        # Saved by the training code (the cents of f0_max); unused at inference.
        mask = 1200.0 * np.log2(c.f0_max / 10.0)
        self.register_buffer("gaussian_blurred_cent_mask", torch.tensor(mask, dtype=torch.float32))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.input_stack(mel.transpose(1, 2)).transpose(1, 2)
        x = self.norm(self.net(x))
        return torch.sigmoid(self.output_proj(x))


class FCPE:
    """A loaded FCPE network with its front end and decoder (see :func:`load_fcpe`).

    Args:
        net: the network (weights loaded); moved to ``device`` in float32.
    """

    def __init__(self, net: FCPENet, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device, torch.float32).eval()
        c = self.config = net.config
        self._basis = mel_basis(SAMPLE_RATE, c.n_fft, c.n_mels, c.fmin, c.fmax, device=self.device)
        self._window = torch.hann_window(c.win_size, device=self.device)

    def mel(self, wav16k: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, N // 160 + 1, n_mels]`` of ``[B, N]`` float audio."""
        c = self.config
        wav = wav16k.to(self.device, torch.float32)
        n = wav.shape[-1]
        left = (c.win_size - HOP_LENGTH) // 2
        right = max((c.win_size - HOP_LENGTH + 1) // 2, c.win_size - n - left)
        # Reflection needs more samples than it mirrors; shorter input is zero-padded instead.
        mode = "reflect" if right < n else "constant"
        wav = nn.functional.pad(wav.unsqueeze(1), (left, right), mode=mode).squeeze(1)
        spec = torch.stft(
            wav,
            c.n_fft,
            hop_length=HOP_LENGTH,
            win_length=c.win_size,
            window=self._window,
            center=False,
            return_complex=True,
        )
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + _MAGNITUDE_EPS)
        mel = torch.log(torch.clamp(self._basis @ magnitude, min=_LOG_FLOOR)).transpose(1, 2)
        frames = n // HOP_LENGTH + 1
        if mel.shape[1] < frames:  # the padding yields one frame short: repeat the last one
            mel = torch.cat([mel, mel[:, -1:].expand(-1, frames - mel.shape[1], -1)], 1)
        return mel[:, :frames]

    @torch.inference_mode()
    def salience(self, wav16k: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` audio -> ``[B, N // 160 + 1, out_dims]`` float32 saliences."""
        return self.net(self.mel(wav16k)).float()

    def decode(self, salience: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
        """Local-argmax decoding ``[..., T, out_dims] -> [..., T]`` Hz; 0 = unvoiced."""
        peak, index = salience.max(dim=-1, keepdim=True)
        offsets = torch.arange(LOCAL_BINS, device=salience.device) - LOCAL_BINS // 2
        window = (index + offsets).clamp(0, salience.shape[-1] - 1)
        weights = salience.gather(-1, window)
        cents = (self.net.cent_table[window] * weights).sum(-1) / weights.sum(-1)
        f0 = 10.0 * 2.0 ** (cents / 1200.0)
        return torch.where(peak[..., 0] > threshold, f0, torch.zeros_like(f0))

    def infer(
        self, wav16k: np.ndarray | torch.Tensor, threshold: float = DEFAULT_THRESHOLD
    ) -> np.ndarray:
        """F0 of mono 16 kHz audio ``[N]`` -> Hz ``[N // 160 + 1]`` float64 (0 = unvoiced)."""
        return self.infer_batch([wav16k], threshold)[0]

    def infer_batch(
        self,
        wavs: Sequence[np.ndarray | torch.Tensor],
        threshold: float = DEFAULT_THRESHOLD,
        max_batch: int = 16,
    ) -> list[np.ndarray]:
        """F0 of several tracks; tracks of equal length share a forward pass.

        Each result equals :meth:`infer` of that track alone (up to float rounding), since
        tracks are never padded to a common length.

        Args:
            wavs: mono 16 kHz tracks ``[N_i]``.
            max_batch: most tracks per forward pass (bounds memory).
        Returns:
            One Hz track ``[N_i // 160 + 1]`` float64 per input, in input order.
        """
        tracks = [
            torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w) for w in wavs
        ]
        for t in tracks:
            if t.dim() != 1:
                raise ValueError(f"FCPE expects mono audio [N], got shape {list(t.shape)}")
        out: list[np.ndarray | None] = [None] * len(tracks)
        by_length: dict[int, list[int]] = {}
        for i, t in enumerate(tracks):
            by_length.setdefault(t.numel(), []).append(i)
        for n, members in by_length.items():
            if n == 0:
                for i in members:
                    out[i] = np.zeros(1)
                continue
            for start in range(0, len(members), max_batch):
                group = members[start : start + max_batch]
                batch = torch.stack([tracks[i].to(torch.float32) for i in group])
                f0 = self.decode(self.salience(batch), threshold).cpu().double().numpy()
                for i, row in zip(group, f0, strict=True):
                    out[i] = row
        return out  # type: ignore[return-value]


def _config_from_file(config: Any, source: str) -> FCPEConfig:
    """The network sizes from the checkpoint's ``config_dict``; refuse what we do not implement."""
    try:
        model, mel = config["model"], config["mel"]
        if model.get("type", "CFNaiveMelPE") != "CFNaiveMelPE":
            raise CheckpointError(f"{source}: FCPE model type {model['type']!r} is not supported; {_FIX}")  # fmt: skip
        if not model.get("conv_only", False) or model.get("use_harmonic_emb", False):
            raise CheckpointError(f"{source}: this FCPE checkpoint uses attention or harmonic embeddings, which rvc-lora does not implement; {_FIX}")  # fmt: skip
        if int(mel["sr"]) != SAMPLE_RATE or int(mel["hop_size"]) != HOP_LENGTH:
            raise CheckpointError(f"{source}: FCPE front end at {mel['sr']} Hz, hop {mel['hop_size']}; rvc-lora needs 16000 Hz, hop 160 (RVC's 10 ms frames)")  # fmt: skip
        cfg = FCPEConfig(
            n_mels=int(mel["num_mels"]),
            n_fft=int(mel["n_fft"]),
            win_size=int(mel["win_size"]),
            fmin=float(mel["fmin"]),
            fmax=float(mel["fmax"]),
            out_dims=int(model["out_dims"]),
            hidden=int(model["hidden_dims"]),
            n_layers=int(model["n_layers"]),
            f0_min=float(model["f0_min"]),
            f0_max=float(model["f0_max"]),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{source}: not an FCPE checkpoint: its config_dict lacks or garbles {exc}; {_FIX}"
        ) from None
    sizes = (cfg.n_mels, cfg.out_dims, cfg.hidden, cfg.n_layers)
    if cfg.hidden % 4 or not all(0 < n <= cap for n, cap in zip(sizes, _SIZE_CAPS, strict=True)):
        raise CheckpointError(f"{source}: FCPE sizes out of range: {asdict(cfg)}")
    # A 16 kHz log-mel: windows of 16..8192 samples, bands inside 0..8000 Hz, finite ranges.
    ranges_ok = (
        16 <= cfg.win_size <= cfg.n_fft <= 8192
        and 0.0 <= cfg.fmin < cfg.fmax <= SAMPLE_RATE / 2
        and 0.0 < cfg.f0_min < cfg.f0_max <= SAMPLE_RATE / 2
    )  # NaN fails every comparison, so it lands here too
    if not ranges_ok:
        raise CheckpointError(
            f"{source}: FCPE ranges out of order (mel front end or pitch range): {asdict(cfg)}"
        )
    return cfg


def _fold_weight_norm(state: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    """Replace ``prefix.weight_g`` / ``weight_v`` with ``weight = g * v / ||v||`` (per row)."""
    state = dict(state)
    g, v = state.pop(f"{prefix}.weight_g", None), state.pop(f"{prefix}.weight_v", None)
    if g is None and v is None:
        return state  # a plain weight (or none): the strict load reports what is wrong
    if not isinstance(g, torch.Tensor) or not isinstance(v, torch.Tensor) or g.dim() != 2 or v.dim() != 2 or g.shape != (v.shape[0], 1):  # fmt: skip
        raise CheckpointError(
            f"{source}: {prefix}.weight_g / weight_v are not a weight-normed linear layer's "
            f"pair; {_FIX}"
        )
    g64, v64 = g.double(), v.double()
    state[f"{prefix}.weight"] = (g64 * v64 / v64.norm(dim=1, keepdim=True)).float()
    return state


def load_fcpe(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> FCPE:
    """Load torchfcpe's ``fcpe_c_v001.pt`` (or a file in its layout) strictly.

    The file is ``{"global_step", "model": state dict, "config_dict": {"mel", "model", ...}}``,
    read with ``weights_only=True``.

    Raises:
        CheckpointError: missing, unreadable or unsafe file; not torchfcpe's layout; a variant
            we do not implement (attention, other front end); keys or shapes that do not fit.
    """
    path = require_weights(path, "FCPE")
    ckpt = safe_torch_load(path)
    source = str(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("config_dict"), dict):  # fmt: skip
        found = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{source}: not an FCPE checkpoint (torchfcpe's files are a dict with 'model' and "
            f"'config_dict'; found {found}); {_FIX}"
        )
    config = _config_from_file(ckpt["config_dict"], source)
    state = _fold_weight_norm(ckpt["model"], "output_proj", source)
    with torch.device("meta"):  # the fit is checked before memory of the claimed size is taken
        check_state_fits(FCPENet(config), state, source=source, hint=_FIX[0].upper() + _FIX[1:])
    net = FCPENet(config)
    net.load_state_dict(state)
    return FCPE(net, device)


def checkpoint_dict(net: FCPENet, global_step: int = 0) -> dict[str, Any]:
    """``net`` in torchfcpe's file layout (weight-normed output layer), for :func:`load_fcpe`."""
    c = net.config
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    weight = state.pop("output_proj.weight")
    norm = weight.norm(dim=1, keepdim=True)
    state["output_proj.weight_g"], state["output_proj.weight_v"] = norm, weight.clone()
    config = {
        "mel": {
            "sr": SAMPLE_RATE,
            "num_mels": c.n_mels,
            "n_fft": c.n_fft,
            "win_size": c.win_size,
            "hop_size": HOP_LENGTH,
            "fmin": c.fmin,
            "fmax": c.fmax,
        },  # fmt: skip
        "model": {
            "type": "CFNaiveMelPE",
            "out_dims": c.out_dims,
            "hidden_dims": c.hidden,
            "n_layers": c.n_layers,
            "n_heads": 8,
            "f0_min": c.f0_min,
            "f0_max": c.f0_max,
            "use_fa_norm": True,
            "conv_only": True,
        },  # fmt: skip
    }
    return {"global_step": global_step, "model": state, "config_dict": config}
