"""Block-by-block (real-time) conversion, the way RVC's realtime mode does it.

Each :meth:`StreamConverter.push` takes one block of 16 kHz input and returns one block of
converted audio. The converter keeps a fixed-size window of past input (``extra_s`` of context,
then the SOLA crossfade and search spans, then the block). Per block it computes content
features and F0 over the whole window, synthesizes only the window's last frames (the
synthesizer's ``skip_head``/``return_length``, which keep the flow's left context), and joins
the result to the previous block by SOLA: a search over ``search_s`` for the offset that best
matches the previous block's tail, then a raised-cosine crossfade over ``crossfade_s``.

Besides the 24 frames of flow context RVC keeps, the decoder here also gets its own receptive
field of left context (decoded, then dropped), so a block's first samples are what the
offline conversion computes there; no latency is added.

The synthesizer's noise comes from a :class:`NoiseTape`: noise indexed by absolute frame, so a
stream and an offline conversion of the same audio draw the same noise at the same place, and
the converter's state stays bounded however long the stream runs.

Algorithmic latency: ``block_s + crossfade_s + search_s``: a sample that arrives at the end of
a block leaves in the block after next's crossfade (RVC's definition, no lookahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rvc_lora.features.f0 import compute_f0
from rvc_lora.features.hubert import upsample_features
from rvc_lora.features.pitch import coarse_pitch, shift_pitch
from rvc_lora.models.fast_decoder import decoder_receptive_field
from rvc_lora.models.synthesizer import FLOW_CONTEXT, InferNoise
from rvc_lora.utils.errors import RvcLoraError

if TYPE_CHECKING:
    from rvc_lora.features.hubert import ContentEncoder
    from rvc_lora.features.index import FeatureIndex
    from rvc_lora.models.synthesizer import Synthesizer

SR_IN = 16000
FRAME = 160  # 10 ms at 16 kHz: one synthesizer frame


class StreamError(RvcLoraError, ValueError):
    """Bad streaming settings or input: one line with the fix."""


class NoiseTape:
    """Standard-normal noise for absolute frames, generated in tiles of ``tile`` frames from
    ``(seed, tile index)``: the same frame always gets the same values, and only the tiles in
    use are kept (at most ``keep``)."""

    def __init__(self, channels: int, hop: int, seed: int = 0, tile: int = 100, keep: int = 8):
        self.channels, self.hop, self.seed, self.tile, self.keep = channels, hop, seed, tile, keep
        self._tiles: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tile(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        tile = self._tiles.pop(k, None)
        if tile is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + k + 2**40)
            prior = torch.randn(self.channels, self.tile, generator=g)
            tile = (prior, torch.randn(self.tile * self.hop, generator=g))
        self._tiles[k] = tile  # most recently used last
        while len(self._tiles) > self.keep:
            del self._tiles[next(iter(self._tiles))]
        return tile

    def frames(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior noise ``[C, count]`` and source noise ``[count * hop]`` for frames
        ``start .. start + count - 1`` (negative frames too: the silence before a stream)."""
        first, last = start // self.tile, (start + count - 1) // self.tile
        tiles = [self._tile(k) for k in range(first, last + 1)]
        prior = torch.cat([t[0] for t in tiles], dim=1)
        source = torch.cat([t[1] for t in tiles])
        off = start - first * self.tile
        return prior[:, off : off + count], source[off * self.hop : (off + count) * self.hop]


@dataclass(frozen=True)
class StreamSizes:
    """Spans in frames (10 ms) and the input window in samples."""

    block: int
    crossfade: int
    search: int
    extra: int
    decoder_context: int
    lookahead: int = 0

    @property
    def window_frames(self) -> int:
        return self.extra + self.crossfade + self.search + self.block + self.lookahead

    @property
    def delay(self) -> int:
        """Frames a block's output comes after its input: crossfade + search + lookahead."""
        return self.crossfade + self.search + self.lookahead

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: block + crossfade + search + lookahead."""
        return (self.block + self.delay) / 100


def _frames(name: str, seconds: float, minimum: int) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise StreamError(f"{name}: {seconds} s is not a duration")
    frames = round(seconds * 100)
    if frames < minimum:
        raise StreamError(f"{name}: {seconds} s is under {minimum * 10} ms")
    return frames


class StreamConverter:
    """Convert a stream block by block with one voice.

    Args:
        voice: a synthesizer in eval mode (a merged voice, or ``VoiceBank.use(name)``).
        encoder: its content encoder.
        block_s: block length (rounded to 10 ms).
        extra_s: input context before the crossfade span, for features and F0.
        crossfade_s: SOLA crossfade length. search_s: SOLA search span.
        lookahead_s: input after a block's end that its conversion waits for (0 in RVC): the
            content encoder and the prior's attention see that much future, and the decoder
            its right-hand receptive field. Adds to the latency.
        f0_method: ``pm``, ``harvest``, ``dio``, ``rmvpe`` (``rmvpe=``) or ``fcpe`` (``fcpe=``).
        pitch: transpose in semitones. speaker_id: row of the speaker embedding.
        index, index_rate: the voice's retrieval index and its share of the features.
        seed: seed of the :class:`NoiseTape`.
    """

    def __init__(
        self,
        voice: Synthesizer,
        encoder: ContentEncoder,
        block_s: float = 0.25,
        extra_s: float = 2.0,
        crossfade_s: float = 0.05,
        f0_method: str = "pm",
        *,
        lookahead_s: float = 0.0,
        search_s: float = 0.01,
        pitch: float = 0.0,
        speaker_id: int = 0,
        seed: int = 0,
        index: FeatureIndex | None = None,
        index_rate: float = 0.75,
        rmvpe=None,
        fcpe=None,
    ) -> None:
        if (
            f0_method in ("rmvpe", "fcpe")
            and voice.f0
            and {"rmvpe": rmvpe, "fcpe": fcpe}[f0_method] is None
        ):
            raise StreamError(f"f0_method={f0_method} needs its network: pass {f0_method}=")
        self.voice, self.encoder = voice, encoder
        self.f0_method, self.rmvpe, self.fcpe = f0_method, rmvpe, fcpe
        self.pitch, self.seed = float(pitch), int(seed)
        self.index = index if (index is not None and index_rate > 0) else None
        self.index_rate = float(index_rate)
        self.sid = torch.tensor([int(speaker_id)])
        self.sizes = StreamSizes(
            block=_frames("block_s", block_s, 1),
            crossfade=_frames("crossfade_s", crossfade_s, 1),
            search=_frames("search_s", search_s, 0),
            extra=_frames("extra_s", extra_s, 5),
            decoder_context=decoder_receptive_field(voice.dec),
            lookahead=_frames("lookahead_s", lookahead_s, 0),
        )
        c = voice.config
        self.hop = c.hop_length  # output samples per frame
        # Enough tiles for one window (and the straddled tiles at its ends): a bounded state.
        tiles = self.sizes.window_frames // 100 + 3
        self.tape = NoiseTape(c.inter_channels, self.hop, seed=self.seed, keep=tiles)
        x = self.sizes.crossfade * self.hop
        t = torch.linspace(0.0, 1.0, x + 2)[1:-1]
        self.fade_in = torch.sin(0.5 * math.pi * t) ** 2  # raised cosine, fade_in + fade_out = 1
        self.fade_out = 1.0 - self.fade_in
        self.reset()

    def reset(self) -> None:
        """Forget the stream: silence before the next block."""
        self.window = np.zeros(self.sizes.window_frames * FRAME, dtype=np.float32)
        self.tail = torch.zeros(self.sizes.crossfade * self.hop)  # previous block's overlap
        self.pushed = 0  # frames received so far
        # NSF sine phase (cycles) at the next block's first decoded frame: carried so that the
        # excitation continues as in one long conversion (RVC restarts it at 0 every block).
        self.phase = 0.0

    @property
    def block_samples(self) -> int:
        """Input samples per :meth:`push` (16 kHz)."""
        return self.sizes.block * FRAME

    def state_numel(self) -> int:
        """Numbers the converter keeps between blocks (constant: nothing grows with the stream)."""
        tiles = sum(p.numel() + s.numel() for p, s in self.tape._tiles.values())
        return self.window.size + self.tail.numel() + tiles

    @torch.inference_mode()
    def push(self, block: np.ndarray) -> np.ndarray:
        """One block of 16 kHz input (``block_samples``) -> one block of output at the voice's
        rate (``block * hop`` samples), :attr:`StreamSizes.delay` frames late."""
        block = np.asarray(block, dtype=np.float32)
        if block.shape != (self.block_samples,):
            raise StreamError(f"push: expected {self.block_samples} samples, got {block.shape}")
        if not np.isfinite(block).all():
            raise StreamError("push: the block contains NaN or Inf samples")
        n = len(block)
        self.window[:-n] = self.window[n:].copy()
        self.window[-n:] = block
        self.pushed += self.sizes.block
        start = self.pushed - self.sizes.window_frames  # absolute frame of window[0]
        s = self.sizes
        keep = s.block + s.crossfade + s.search
        wav, f0, head = self._synthesize(self.window, start, keep, self.phase, s.lookahead)
        if f0 is not None:
            advance = float(np.sum(f0[head : head + s.block], dtype=np.float64))
            self.phase = (self.phase + advance * self.hop / self.voice.config.sr) % 1.0
        return self._join(wav)

    def _synthesize(
        self, audio: np.ndarray, start: int, keep: int, phase: float = 0.0, lookahead: int = 0
    ) -> tuple[torch.Tensor, np.ndarray | None, int]:
        """``keep`` frames of ``audio``'s conversion ending ``lookahead`` frames before its end
        (``start``: the absolute frame of ``audio[0]``; ``phase``: the sine's at the first
        decoded frame); also the window's F0 and the index of the first decoded frame."""
        model, hop = self.voice, self.hop
        frames = len(audio) // FRAME
        feats, f0 = self.frontend(audio, start)
        pitch = pitchf = None
        if f0 is not None:
            pitch = torch.from_numpy(coarse_pitch(f0)).unsqueeze(0)
            pitchf = torch.from_numpy(f0).unsqueeze(0)
        # Decode the decoder's receptive field on both sides of the kept frames (as far as the
        # window reaches) and drop it: the kept samples are then what one long decode gives.
        right = min(self.sizes.decoder_context, lookahead)
        end = frames - lookahead + right
        context = min(self.sizes.decoder_context, end - right - keep)
        decoded = context + keep + right
        head = end - decoded
        flow_head = max(head - FLOW_CONTEXT, 0)
        prior, _ = self.tape.frames(start + flow_head, frames - flow_head)
        _, source = self.tape.frames(start + head, decoded)
        noise = InferNoise(prior.unsqueeze(0), source.view(1, -1, 1), torch.tensor([phase]))
        lengths = torch.tensor([frames])
        out = model.infer(feats, lengths, pitch, pitchf, self.sid, skip_head=head,
                          return_length=decoded, noise=noise)[0]  # fmt: skip
        out = out[0, 0, context * hop : (context + keep) * hop]
        return out.float(), f0, head

    def frontend(self, audio: np.ndarray, start: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """Content features ``[1, T, D]`` and shifted F0 ``[T]`` (None without pitch) of a window
        of ``T = len(audio) // 160`` frames starting at absolute frame ``start``.

        Computed over the window alone, as in RVC's realtime mode. HuBERT's first layer
        normalises over the whole input and F0 trackers look around each frame, so these
        differ from an offline conversion's most near the window's edges; everything after
        them (the synthesis, the joins) reproduces the offline result.
        """
        del start  # the window's own samples are all there is
        model = self.voice
        frames = len(audio) // FRAME
        wav = torch.from_numpy(audio).view(1, -1)
        feats = self.encoder.extract(wav, model.config.version).float()  # [1, T50, D]
        if self.index is not None:
            feats = torch.from_numpy(self.index.blend(feats[0].numpy(), self.index_rate))[None]
        feats = upsample_features(feats)
        # HuBERT's window leaves the last 1-2 frames out: repeat the last one (RVC realtime too).
        if feats.shape[1] < frames:
            pad = feats[:, -1:].expand(-1, frames - feats.shape[1], -1)
            feats = torch.cat([feats, pad], dim=1)
        if not model.f0:
            return feats[:, :frames], None
        f0 = compute_f0(audio.astype(np.float64), self.f0_method, p_len=frames,
                        rmvpe=self.rmvpe, fcpe=self.fcpe)  # fmt: skip
        return feats[:, :frames], shift_pitch(f0, self.pitch).astype(np.float32)

    def _join(self, wav: torch.Tensor) -> np.ndarray:
        """SOLA: align ``wav`` to the previous tail, crossfade, keep the new tail."""
        x, b = self.sizes.crossfade * self.hop, self.sizes.block * self.hop
        search = self.sizes.search * self.hop
        head = wav[: x + search].view(1, 1, -1)
        num = torch.nn.functional.conv1d(head, self.tail.view(1, 1, -1))[0, 0]
        energy = torch.nn.functional.conv1d(head**2, torch.ones(1, 1, x))[0, 0]
        offset = int(torch.argmax(num / torch.sqrt(energy + 1e-8)))
        wav = wav[offset:].clone()
        wav[:x] = wav[:x] * self.fade_in + self.tail * self.fade_out
        self.tail = wav[b : b + x].clone()
        return wav[:b].numpy()

    def convert_offline(self, audio16k: np.ndarray) -> np.ndarray:
        """The whole input converted at once with the same features, F0 and noise tape: what
        the stream approximates. Aligned with the stream's output (the same latency)."""
        s = self.sizes
        frames = len(audio16k) // FRAME
        padded = np.concatenate([np.zeros(s.extra * FRAME, np.float32),
                                 np.asarray(audio16k, np.float32)[: frames * FRAME]])  # fmt: skip
        out, _, _ = self._synthesize(padded, -s.extra, len(padded) // FRAME)
        silence = np.zeros(s.delay * self.hop, np.float32)  # the stream's output is this late
        return np.concatenate([silence, out.numpy()[s.extra * self.hop :]])
