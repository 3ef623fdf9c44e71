"""Offline voice conversion, step for step as RVC's ``Pipeline.pipeline`` (RVC_FACTS.md §9.2).

16 kHz input -> peak limit 0.95 -> zero-phase 48 Hz high-pass -> cut points at quiet spots near
every ``x_center`` seconds (only for input longer than ``x_max``) -> reflect padding by ``x_pad``
seconds -> F0 once over the padded input -> per chunk: content features, retrieval blend,
protect, x2 upsampling, ``model.infer``, trim the padding -> concatenate -> RMS mix -> optional
resampling -> peak normalisation to 0.99.

Faithful details worth knowing:

- Each chunk's features cover 1-2 frames (hops) less than its samples (HuBERT's 400-sample
  window), and RVC does not pad them back: the output is up to 2 hops per chunk shorter than
  the input, plus the input's remainder below one 160-sample hop.
- A chunk between cut points spans at most ``x_center + 2 x_query`` seconds plus the padding
  (RVC's cut windows, not ``x_max``, bound it).
- The synthesizer draws its prior noise from torch's RNG; with ``ConvertOptions.seed`` set, the
  pipeline seeds a forked RNG before every chunk, so a conversion is reproducible and the
  caller's RNG state is left as it was. RVC does not seed.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal

from rvc_lora.features.f0 import F0_METHODS, compute_f0
from rvc_lora.features.hubert import upsample_features
from rvc_lora.features.index import FeatureIndex, check_dim
from rvc_lora.features.pitch import coarse_pitch, shift_pitch, voiced_median_hz
from rvc_lora.inference.pitch import MAX_AUTO_SHIFT, auto_pitch_shift
from rvc_lora.utils.errors import RvcLoraError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rvc_lora.features.fcpe import FCPE
    from rvc_lora.features.hubert import ContentEncoder
    from rvc_lora.features.rmvpe import RMVPE
    from rvc_lora.models.synthesizer import Synthesizer

log = logging.getLogger(__name__)

SR_IN = 16000  # content features and F0 work at 16 kHz
WINDOW = 160  # one F0/synthesizer frame at 16 kHz (10 ms)
INPUT_PEAK = 0.95
OUTPUT_PEAK = 0.99
_BH, _AH = signal.butter(N=5, Wn=48, btype="high", fs=SR_IN)
MIN_SAMPLES = 400  # HuBERT's receptive field


class ConversionError(RvcLoraError, ValueError):
    """Bad conversion options or input audio that the pipeline cannot convert."""


@dataclass
class ConvertOptions:
    """Per-conversion settings; defaults are RVC's UI defaults (§9.2 step 12).

    Attributes:
        pitch: transpose in semitones (+12 = one octave up).
        auto_pitch_hz: the voice's median F0 in Hz; when set, ``pitch`` is replaced by the shift
            that moves the source's median F0 (of the track computed for the conversion) onto
            it (:func:`rvc_lora.inference.pitch.auto_pitch_shift`), 0 for a source with no
            voiced frame. :attr:`ConversionPipeline.last_pitch` tells the shift used.
        f0_method: ``rmvpe`` (needs the pipeline's ``rmvpe``), ``fcpe`` (needs its ``fcpe``),
            ``pm``, ``harvest`` or ``dio``. ``auto`` is a config value, resolved before this
            (:func:`rvc_lora.features.f0.resolve_f0_method`).
        index_rate: share of retrieved features, 0..1 (0 turns retrieval off).
        protect: 0..0.5; unvoiced frames keep ``1 - protect`` of the unretrieved features.
            0.5 turns it off.
        rms_mix_rate: 0 imposes the input's loudness envelope, 1 keeps the output's.
        filter_radius: harvest only: > 2 applies a 3-tap median filter.
        resample_sr: 0 keeps the model's rate; otherwise an output rate >= 16000.
        speaker_id: row of the model's speaker embedding.
        seed: seeds the prior noise of each chunk (reproducible output); None uses torch's RNG.
    """

    pitch: float = 0.0
    auto_pitch_hz: float | None = None
    f0_method: str = "rmvpe"
    index_rate: float = 0.75
    protect: float = 0.33
    rms_mix_rate: float = 0.25
    filter_radius: int = 3
    resample_sr: int = 0
    speaker_id: int = 0
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not np.isfinite(self.pitch) or abs(self.pitch) > 48:
            raise ConversionError(f"pitch: {self.pitch} semitones is outside -48..48")
        if self.auto_pitch_hz is not None and not (
            np.isfinite(self.auto_pitch_hz) and self.auto_pitch_hz > 0
        ):
            raise ConversionError(f"auto_pitch_hz: {self.auto_pitch_hz} is not a positive Hz value")
        if self.f0_method not in F0_METHODS:
            raise ConversionError(
                f"f0_method: unknown {self.f0_method!r}; choose one of {', '.join(F0_METHODS)}"
            )
        for name in ("index_rate", "rms_mix_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConversionError(f"{name}: {value} is outside 0..1")
        if not 0.0 <= self.protect <= 0.5:
            raise ConversionError(f"protect: {self.protect} is outside 0..0.5 (0.5 = off)")
        if int(self.filter_radius) != self.filter_radius or self.filter_radius < 0:
            raise ConversionError(
                f"filter_radius: expected an integer >= 0, got {self.filter_radius}"
            )
        if self.resample_sr != 0 and not (
            int(self.resample_sr) == self.resample_sr and self.resample_sr >= SR_IN
        ):
            raise ConversionError(
                f"resample_sr: {self.resample_sr} Hz; use 0 (model rate) or a rate >= {SR_IN}"
            )
        if int(self.speaker_id) != self.speaker_id or self.speaker_id < 0:
            raise ConversionError(f"speaker_id: expected an integer >= 0, got {self.speaker_id}")


@dataclass
class SynthJob:
    """One chunk's synthesizer call: phone ``[1, T, D]``, lengths ``[1]``, pitch/pitchf
    ``[1, T]`` (None without F0), sid ``[1]``, and the seed of its noise."""

    phone: torch.Tensor
    lengths: torch.Tensor
    pitch: torch.Tensor | None
    pitchf: torch.Tensor | None
    sid: torch.Tensor
    seed: int | None


@dataclass
class ConversionPlan:
    """What :meth:`ConversionPipeline.plan` computed for one input before synthesis."""

    audio: np.ndarray  # filtered input [N]
    audio_pad: np.ndarray  # reflect-padded by x_pad each side
    cuts: list[int]
    pitch: torch.Tensor | None  # [1, P] over audio_pad
    pitchf: torch.Tensor | None
    opts: ConvertOptions
    index: FeatureIndex | None  # None when retrieval is off
    sr: int  # the model's rate


class ConversionPipeline:
    """RVC's offline conversion around a content encoder (and an F0 network for ``rmvpe``/``fcpe``).

    Args:
        encoder: HuBERT content encoder (on ``device``).
        rmvpe: loaded RMVPE model, needed for ``f0_method="rmvpe"``.
        fcpe: loaded FCPE model (:func:`rvc_lora.features.fcpe.load_fcpe`), needed for
            ``f0_method="fcpe"``.
        device: where feature and pitch tensors go (the models must already be there).
        x_pad, x_query, x_center, x_max: RVC's chunking constants in seconds; the defaults are
            its fp32 set (``is_half`` uses 3/10/60/65, a GPU with <= 4 GB 1/5/30/32).
        fast: run chunks under ``torch.inference_mode`` with the fast decoder, which skips the
            ``x_pad`` seconds of each chunk that are dropped anyway (same output within 1e-4;
            ``Synthesizer.infer``'s ``crop``). False: the pre-issue-17 path, for comparisons.
    """

    def __init__(
        self,
        encoder: ContentEncoder,
        *,
        rmvpe: RMVPE | None = None,
        fcpe: FCPE | None = None,
        device: str | torch.device = "cpu",
        x_pad: int = 1,
        x_query: int = 6,
        x_center: int = 38,
        x_max: int = 41,
        fast: bool = True,
    ) -> None:
        for name, value in (("x_pad", x_pad), ("x_query", x_query), ("x_center", x_center),
                            ("x_max", x_max)):  # fmt: skip
            if int(value) != value or value < 1:
                raise ConversionError(
                    f"{name}: expected a whole number of seconds >= 1, got {value}"
                )
        if x_center <= 2 * x_query or x_max < x_center:
            raise ConversionError(
                f"chunking needs x_center > 2 * x_query and x_max >= x_center, got "
                f"x_query={x_query}, x_center={x_center}, x_max={x_max}"
            )
        self.encoder, self.rmvpe, self.device = encoder, rmvpe, torch.device(device)
        self.fcpe = fcpe
        self.x_pad = int(x_pad)
        self.t_pad = SR_IN * int(x_pad)
        self.t_query = SR_IN * int(x_query)
        self.t_center = SR_IN * int(x_center)
        self.t_max = SR_IN * int(x_max)
        self.fast = bool(fast)
        self.last_pitch: float | None = None  # semitones the last convert() transposed by

    # -- public ----------------------------------------------------------------------------
    def convert(
        self,
        model: Synthesizer,
        audio16k: np.ndarray,
        opts: ConvertOptions | None = None,
        index: FeatureIndex | None = None,
    ) -> tuple[np.ndarray, int]:
        """Convert 16 kHz mono audio with ``model``.

        Args:
            model: synthesizer in eval mode (f0 or nono), on the pipeline's device.
            audio16k: ``[N]`` float audio at 16 kHz, N >= 400.
            opts: conversion settings (default: RVC's UI defaults).
            index: retrieval index of the target speaker (used if ``opts.index_rate > 0``).
        Returns:
            ``(audio [M] float32 in [-1, 1], sample_rate)``; the rate is ``model.config.sr``
            or ``opts.resample_sr``.
        """
        plan = self.plan(model, audio16k, opts, index)
        return self.finish(plan, [self.synthesize(model, job) for job in self.jobs(model, plan)])

    def plan(
        self,
        model: Synthesizer,
        audio16k: np.ndarray,
        opts: ConvertOptions | None = None,
        index: FeatureIndex | None = None,
    ) -> ConversionPlan:
        """The first steps of :meth:`convert`: checks, filtering, cut points, padding, F0."""
        opts = opts or ConvertOptions()
        self._check(model, opts, index)
        audio = self._prepare(audio16k)
        cuts = self.cut_points(audio)
        audio_pad = np.pad(audio, (self.t_pad, self.t_pad), mode="reflect")
        pitch, pitchf = self._pitch(model, audio_pad, opts)
        use_index = index if (index is not None and opts.index_rate != 0) else None
        return ConversionPlan(audio, audio_pad, cuts, pitch, pitchf, opts, use_index,
                              int(model.config.sr))  # fmt: skip

    def jobs(self, model: Synthesizer, plan: ConversionPlan) -> Iterator[SynthJob]:
        """One synthesis job per chunk, in order (content features, retrieval, protect)."""
        sid = torch.tensor([int(plan.opts.speaker_id)], device=self.device, dtype=torch.long)
        spans: list[tuple[int, int | None, slice]] = []
        s = 0
        for t in plan.cuts:
            t = t // WINDOW * WINDOW
            spans.append(
                (s, t + 2 * self.t_pad + WINDOW, slice(s // WINDOW, (t + 2 * self.t_pad) // WINDOW))
            )
            s = t
        spans.append((s, None, slice(s // WINDOW, None)))
        for start, end, frames in spans:
            p = plan.pitch[:, frames] if plan.pitch is not None else None
            pf = plan.pitchf[:, frames] if plan.pitchf is not None else None
            yield self._features(
                model, plan.audio_pad[start:end], p, pf, sid, plan.index, plan.opts
            )

    def synthesize(self, model: Synthesizer, job: SynthJob) -> np.ndarray:
        """A job's ``[T * hop]`` audio, its prior noise seeded by the options' seed."""
        with (
            torch.inference_mode() if self.fast else torch.no_grad(),
            seeded(job.seed, self.device),
        ):
            return self._synthesize(model, job.phone, job.lengths, job.pitch, job.pitchf, job.sid)

    def finish(self, plan: ConversionPlan, outputs: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """The last steps of :meth:`convert`: trim each chunk's padding, join, RMS mix,
        resample, peak-normalise. ``outputs``: each job's synthesized ``[T * hop]``."""
        opts, tgt_sr = plan.opts, plan.sr
        t_pad_tgt = tgt_sr * self.x_pad
        out = np.concatenate([o[t_pad_tgt : len(o) - t_pad_tgt] for o in outputs])
        out = out.astype(np.float32, copy=False)
        if opts.rms_mix_rate != 1:
            out = change_rms(plan.audio, SR_IN, out, tgt_sr, opts.rms_mix_rate)
        sr = tgt_sr
        if opts.resample_sr and opts.resample_sr != tgt_sr:
            from rvc_lora.audio import resample

            out, sr = resample(out, tgt_sr, int(opts.resample_sr)), int(opts.resample_sr)
        peak = float(np.abs(out).max()) / OUTPUT_PEAK if out.size else 0.0
        if peak > 1:
            out = out / peak
        return out.astype(np.float32, copy=False), sr

    def cut_points(self, audio: np.ndarray) -> list[int]:
        """RVC's split points (samples of ``audio``) for input longer than ``x_max``.

        For every multiple t of ``t_center`` inside the audio, the start of the quietest
        160-sample window (sum of |x|) in ``[t - t_query, t + t_query)``.
        """
        half = WINDOW // 2
        padded = np.pad(audio, (half, half), mode="reflect")
        if len(padded) <= self.t_max:
            return []
        # window_sum[i] = sum(|padded[i : i + 160]|) for i < len(audio); [N]
        csum = np.concatenate(([0.0], np.cumsum(np.abs(padded), dtype=np.float64)))
        window_sum = csum[WINDOW : WINDOW + len(audio)] - csum[: len(audio)]
        cuts = []
        for t in range(self.t_center, len(audio), self.t_center):
            lo = t - self.t_query
            cuts.append(lo + int(np.argmin(window_sum[lo : t + self.t_query])))
        return cuts

    # -- steps -----------------------------------------------------------------------------
    def _check(self, model: Synthesizer, opts: ConvertOptions, index: FeatureIndex | None) -> None:
        version, dim = model.config.version, model.config.feature_dim
        have = self.encoder.feature_dim(version)
        if have != dim:
            raise ConversionError(
                f"content encoder gives {have}-d {version} features, the model needs {dim}-d"
            )
        if index is not None and opts.index_rate != 0:
            check_dim(index.index, dim, "index")
        if opts.speaker_id >= model.config.spk_embed_dim:
            raise ConversionError(
                f"speaker_id: {opts.speaker_id}, but the model has "
                f"{model.config.spk_embed_dim} speakers (0..{model.config.spk_embed_dim - 1})"
            )
        if model.f0 and opts.f0_method == "rmvpe" and self.rmvpe is None:
            raise ConversionError(
                "f0_method 'rmvpe' needs ConversionPipeline(rmvpe=load_rmvpe(path)); or pick "
                "'pm' or 'harvest'"
            )
        if model.f0 and opts.f0_method == "fcpe" and self.fcpe is None:
            raise ConversionError(
                "f0_method 'fcpe' needs ConversionPipeline(fcpe=load_fcpe(path)) (weights: "
                "`rvc-lora download fcpe`); or pick 'pm' or 'harvest'"
            )

    @staticmethod
    def _prepare(audio16k: np.ndarray) -> np.ndarray:
        """Peak-limit to 0.95, then the zero-phase 48 Hz high-pass (float64, as RVC)."""
        x = np.asarray(audio16k)
        if x.ndim != 1:
            raise ConversionError(f"expected mono audio [N] at 16 kHz, got shape {list(x.shape)}")
        if len(x) < MIN_SAMPLES:
            raise ConversionError(
                f"input has {len(x)} samples; need at least {MIN_SAMPLES} (25 ms at 16 kHz)"
            )
        if not np.isfinite(x).all():
            raise ConversionError("input audio contains NaN or Inf samples")
        x = x.astype(np.float32)
        peak = float(np.abs(x).max()) / INPUT_PEAK
        if peak > 1:
            x = x / peak
        return signal.filtfilt(_BH, _AH, x)

    def _pitch(
        self, model: Synthesizer, audio_pad: np.ndarray, opts: ConvertOptions
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Coarse pitch ``[1, P]`` (long) and shifted F0 ``[1, P]`` (Hz), P = len // 160."""
        self.last_pitch = float(opts.pitch) if opts.auto_pitch_hz is None else 0.0
        if not model.f0:
            return None, None
        p_len = len(audio_pad) // WINDOW
        f0 = compute_f0(
            audio_pad, opts.f0_method, p_len=p_len, rmvpe=self.rmvpe, fcpe=self.fcpe,
            filter_radius=int(opts.filter_radius),
        )  # fmt: skip
        if opts.auto_pitch_hz is not None:
            self.last_pitch = float(self._auto_shift(f0, opts.auto_pitch_hz))
        f0 = shift_pitch(f0, self.last_pitch).astype(np.float32)
        pitch = torch.from_numpy(coarse_pitch(f0)).unsqueeze(0).to(self.device)
        pitchf = torch.from_numpy(f0).unsqueeze(0).to(self.device)
        return pitch, pitchf

    def _auto_shift(self, f0_pad: np.ndarray, voice_hz: float) -> int:
        """``pitch=auto``: the shift onto ``voice_hz`` from the median of the source's own F0
        (the reflect padding left out: it repeats the edges of the input)."""
        pad = self.t_pad // WINDOW
        source_hz = voiced_median_hz(f0_pad[pad : len(f0_pad) - pad])
        if source_hz is None:
            log.warning("pitch=auto: the source has no voiced frame; no transposition")
            return 0
        shift = auto_pitch_shift(voice_hz, source_hz)
        clipped = abs(shift) == MAX_AUTO_SHIFT
        log.info(
            "pitch=auto: source median %.1f Hz, voice median %.1f Hz -> %+d semitones%s",
            source_hz, voice_hz, shift, " (clipped)" if clipped else "",
        )  # fmt: skip
        return shift

    def _features(
        self,
        model: Synthesizer,
        chunk: np.ndarray,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor,
        index: FeatureIndex | None,
        opts: ConvertOptions,
    ) -> SynthJob:
        """One chunk's synthesizer inputs (RVC's ``vc`` up to ``infer``): features, retrieval,
        protect."""
        # inference_mode skips autograd's version and view bookkeeping; no_grad on the old path.
        with torch.inference_mode() if self.fast else torch.no_grad():
            wav = torch.from_numpy(chunk).float().view(1, -1).to(self.device)  # [1, N]
            feats = self.encoder.extract(wav, model.config.version).float()  # [1, T50, D]
            protect = opts.protect < 0.5 and pitch is not None
            feats0 = feats.clone() if protect else None
            if index is not None:
                mixed = index.blend(feats[0].cpu().numpy(), opts.index_rate)  # [T50, D]
                feats = torch.from_numpy(mixed).unsqueeze(0).to(self.device)
            feats = upsample_features(feats)  # [1, 2*T50, D] at 100 fps
            p_len = min(len(chunk) // WINDOW, feats.shape[1])
            feats = feats[:, :p_len]
            if pitch is not None and pitchf is not None:
                pitch, pitchf = pitch[:, :p_len], pitchf[:, :p_len]
            if feats0 is not None and pitchf is not None:
                feats0 = upsample_features(feats0)[:, :p_len]
                # 1 on voiced frames, `protect` on unvoiced ones (RVC: pitchf < 1): [1, T, 1]
                mask = torch.where(pitchf < 1, opts.protect, 1.0).unsqueeze(-1).to(feats.dtype)
                feats = feats * mask + feats0 * (1 - mask)
            lengths = torch.tensor([p_len], device=self.device, dtype=torch.long)
        return SynthJob(feats, lengths, pitch, pitchf, sid, opts.seed)

    def _synthesize(
        self,
        model: Synthesizer,
        phone: torch.Tensor,
        lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor,
    ) -> np.ndarray:
        """The single call into the synthesizer (a seam for tests and profiling).

        Args:
            phone: ``[1, T, D]`` features at 100 fps; lengths ``[1]``; pitch/pitchf ``[1, T]``
                (None for nono models); sid ``[1]``.
        Returns:
            ``[T * hop]`` float32 audio at the model's rate. On the fast path the first and
            last ``x_pad`` seconds, which :meth:`convert` drops from every chunk, are zeros:
            they are not synthesized (the decoder's receptive field is decoded, then cut).
        """
        hop = model.config.hop_length
        pad = self.x_pad * int(model.config.sr)  # samples convert() drops at each end
        if not self.fast or pad % hop:
            out = model.infer(phone, lengths, pitch, pitchf, sid, fast=self.fast)[0]
            return out[0, 0].float().cpu().numpy()  # [T*hop]
        frames = pad // hop
        kept = model.infer(phone, lengths, pitch, pitchf, sid, crop=(frames, frames))[0]
        out = np.zeros(phone.shape[1] * hop, dtype=np.float32)  # [T*hop]
        kept = kept[0, 0].float().cpu().numpy()  # [(T - 2*frames)*hop] or empty
        out[pad : pad + len(kept)] = kept
        return out


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run with torch's RNG seeded to ``seed`` and restore the caller's state afterwards."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def change_rms(data1: np.ndarray, sr1: int, data2: np.ndarray, sr2: int, rate: float) -> np.ndarray:
    """RVC's loudness mix: ``data2 * rms1^(1-rate) * rms2^(rate-1)`` (§9.2 step 9).

    Args:
        data1: input audio (filtered, unpadded) at ``sr1``; data2: output audio at ``sr2``.
        rate: 1 keeps data2's envelope, 0 imposes data1's.
    Returns:
        ``data2``'s length, float32.
    """
    import librosa

    def envelope(y: np.ndarray, sr: int) -> torch.Tensor:
        # RMS over 1 s frames every 0.5 s, linearly stretched to the output length: [len(data2)]
        rms = librosa.feature.rms(y=y, frame_length=sr // 2 * 2, hop_length=sr // 2)  # [1, F]
        rms = torch.from_numpy(np.asarray(rms, dtype=np.float32)).unsqueeze(0)  # [1, 1, F]
        return F.interpolate(rms, size=len(data2), mode="linear")[0, 0]

    rms1 = envelope(data1, sr1)
    rms2 = envelope(data2, sr2).clamp_min(1e-6)
    gain = rms1.pow(1 - rate) * rms2.pow(rate - 1)
    return (data2 * gain.numpy()).astype(np.float32, copy=False)
