"""RVC hyperparameters per version and sample rate (RVC_FACTS.md §1.2), plus a tiny CPU preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthesizer's shapes, in RVC's saved-config order.

    ``segment_size`` is in frames (RVC: train.segment_size // hop_length). The data fields
    (``hop_length``, ``n_fft``, ``n_mels``) are not part of the model's weights but travel with it
    because training and inference need them.
    """

    spec_channels: int
    segment_size: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    spk_embed_dim: int
    gin_channels: int
    sr: int
    version: str = "v2"
    hop_length: int = field(default=0)
    n_fft: int = field(default=0)
    n_mels: int = field(default=0)

    def __post_init__(self) -> None:
        if self.version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {self.version!r}")
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        if self.hop_length == 0:
            object.__setattr__(self, "hop_length", hop)
        elif self.hop_length != hop:
            raise ValueError(
                f"hop_length {self.hop_length} != product of upsample_rates {hop}; fix the preset"
            )
        if self.n_fft == 0:
            object.__setattr__(self, "n_fft", 2 * (self.spec_channels - 1))

    @property
    def feature_dim(self) -> int:
        """Content-feature width into ``enc_p.emb_phone``: 256 (v1) or 768 (v2)."""
        return 256 if self.version == "v1" else 768

    def to_rvc_list(self) -> list:
        """RVC's 18-item ``config`` list; segment_size is RVC's fixed placeholder 32."""
        return [
            self.spec_channels,
            32,
            self.inter_channels,
            self.hidden_channels,
            self.filter_channels,
            self.n_heads,
            self.n_layers,
            self.kernel_size,
            self.p_dropout,
            self.resblock,
            list(self.resblock_kernel_sizes),
            [list(d) for d in self.resblock_dilation_sizes],
            list(self.upsample_rates),
            self.upsample_initial_channel,
            list(self.upsample_kernel_sizes),
            self.spk_embed_dim,
            self.gin_channels,
            self.sr,
        ]

    @classmethod
    def from_rvc_list(
        cls, cfg: list, version: str, spk_embed_dim: int | None = None
    ) -> SynthConfig:
        """Inverse of :meth:`to_rvc_list`; ``sr`` may be an int or '32k'/'40k'/'48k'."""
        if len(cfg) != 18:
            raise ValueError(f"RVC config list must have 18 items, got {len(cfg)}")
        sr = cfg[17]
        if isinstance(sr, str):
            sr = int(sr.lower().rstrip("k")) * 1000
        return cls(
            spec_channels=int(cfg[0]),
            segment_size=int(cfg[1]),
            inter_channels=int(cfg[2]),
            hidden_channels=int(cfg[3]),
            filter_channels=int(cfg[4]),
            n_heads=int(cfg[5]),
            n_layers=int(cfg[6]),
            kernel_size=int(cfg[7]),
            p_dropout=float(cfg[8]),
            resblock=str(cfg[9]),
            resblock_kernel_sizes=tuple(int(k) for k in cfg[10]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in cfg[11]),
            upsample_rates=tuple(int(u) for u in cfg[12]),
            upsample_initial_channel=int(cfg[13]),
            upsample_kernel_sizes=tuple(int(k) for k in cfg[14]),
            spk_embed_dim=int(spk_embed_dim if spk_embed_dim is not None else cfg[15]),
            gin_channels=int(cfg[16]),
            sr=int(sr),
            version=version,
            n_mels=_DEFAULT_N_MELS.get(int(sr), 80),
        )

    def replace(self, **changes) -> SynthConfig:
        return dataclasses.replace(self, **changes)


_DEFAULT_N_MELS = {32000: 80, 40000: 125, 48000: 128, 16000: 64}

_COMMON = dict(
    inter_channels=192,
    hidden_channels=192,
    filter_channels=768,
    n_heads=2,
    n_layers=6,
    kernel_size=3,
    p_dropout=0.0,
    resblock="1",
    resblock_kernel_sizes=(3, 7, 11),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    upsample_initial_channel=512,
    spk_embed_dim=109,
    gin_channels=256,
)

PRESETS: dict[str, SynthConfig] = {
    "v1_32k": SynthConfig(
        spec_channels=513,
        segment_size=40,
        upsample_rates=(10, 4, 2, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4, 4),
        sr=32000,
        version="v1",
        n_mels=80,
        **_COMMON,
    ),
    "v1_40k": SynthConfig(
        spec_channels=1025,
        segment_size=32,
        upsample_rates=(10, 10, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4),
        sr=40000,
        version="v1",
        n_mels=125,
        **_COMMON,
    ),
    "v1_48k": SynthConfig(
        spec_channels=1025,
        segment_size=24,
        upsample_rates=(10, 6, 2, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4, 4),
        sr=48000,
        version="v1",
        n_mels=128,
        **_COMMON,
    ),
    "v2_32k": SynthConfig(
        spec_channels=513,
        segment_size=40,
        upsample_rates=(10, 8, 2, 2),
        upsample_kernel_sizes=(20, 16, 4, 4),
        sr=32000,
        version="v2",
        n_mels=80,
        **_COMMON,
    ),
    # RVC has no v2 40k config file: v2 at 40k uses v1/40k.json (RVC_FACTS.md §1.2).
    "v2_40k": SynthConfig(
        spec_channels=1025,
        segment_size=32,
        upsample_rates=(10, 10, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4),
        sr=40000,
        version="v2",
        n_mels=125,
        **_COMMON,
    ),
    "v2_48k": SynthConfig(
        spec_channels=1025,
        segment_size=36,
        upsample_rates=(12, 10, 2, 2),
        upsample_kernel_sizes=(24, 20, 4, 4),
        sr=48000,
        version="v2",
        n_mels=128,
        **_COMMON,
    ),
    # Same classes at small sizes: 16 kHz, hop 160 (100 frames/s like every RVC preset). v1 so
    # that content features are 256-d final_proj outputs: a tiny HuBERT in the real layout can
    # then be small inside (a v2 model would need a 768-wide encoder). Cheap on a CPU.
    "tiny": SynthConfig(
        spec_channels=257,
        segment_size=24,
        inter_channels=32,
        hidden_channels=32,
        filter_channels=64,
        n_heads=2,
        n_layers=2,
        kernel_size=3,
        p_dropout=0.0,
        resblock="1",
        resblock_kernel_sizes=(3, 7, 11),
        resblock_dilation_sizes=((1, 3, 5),) * 3,
        upsample_rates=(10, 4, 4),
        upsample_initial_channel=64,
        upsample_kernel_sizes=(20, 8, 8),
        spk_embed_dim=8,  # the demo base is pretrained on several voices, one row each
        gin_channels=32,
        sr=16000,
        version="v1",
        n_mels=64,
    ),
}


def get_preset(name: str) -> SynthConfig:
    """The :class:`SynthConfig` of preset ``name``; the error lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
