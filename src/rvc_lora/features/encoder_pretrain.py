"""Pretrain the tiny content encoder on a parallel corpus, so its features carry content, not voice.

A randomly initialised HuBERT passes the speaker's timbre straight through, and an RVC model fed
such features copies the *source* speaker. Real HuBERT/ContentVec learn speaker-invariant units
from 960 h of speech; the demo corpus is tiny but *parallel* (every voice speaks every sentence),
which gives speaker-invariant targets directly:

1. MFCCs per voice, mean/variance-normalised per voice (removes each voice's average timbre).
2. Every voice's utterance of a sentence is DTW-aligned to a pivot voice's; the aligned frames of
   all voices are averaged into one "consensus" frame per pivot frame.
3. k-means on the consensus frames gives units; every voice's frame gets the unit of the pivot
   frame it aligns to, so the same sound has the same label whoever says it.
4. The encoder learns to predict the unit at each 20 ms frame with HuBERT's own head: cosine of
   ``final_proj(layer 9)`` with ``label_embs_concat`` rows, temperature 0.1. Speed perturbation
   (pitch and formants move together) widens the range of voices it has heard.

Only RVC v1's path (``final_proj`` of layer 9) is trained; layers 10-12 stay as initialised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rvc_lora.features.hubert import HOP, OUTPUT_LAYER, WINDOW, ContentEncoder, num_frames

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_SPECIAL_SYMBOLS = 4  # fairseq Dictionary rows before the cluster labels


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Everything that decides the trained encoder (recorded in the checkpoint)."""

    n_units: int = 64
    pivot: str = ""  # voice aligned to; "" = first voice in sorted order
    steps: int = 2000
    batch_size: int = 16
    crop_s: float = 1.0
    lr: float = 2e-3
    warmup: int = 50
    speed_range: float = 0.2  # speed perturbation factor in [1 - r, 1 + r]
    seed: int = 0


def frame_mfcc(wav: np.ndarray) -> np.ndarray:
    """20 MFCCs on HuBERT's frame grid (400-sample window, 320 hop): ``[T, 20]``."""
    import librosa

    mfcc = librosa.feature.mfcc(
        y=wav.astype(np.float32), sr=SAMPLE_RATE, n_mfcc=20, n_fft=WINDOW, hop_length=HOP,
        win_length=WINDOW, center=False, n_mels=40,
    )  # fmt: skip
    return mfcc.T[: num_frames(len(wav))]


def dtw_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Monotone alignment of frames ``x [N, D]`` and ``y [M, D]``: ``[L, 2]`` index pairs."""
    import librosa

    _, path = librosa.sequence.dtw(X=x.T, Y=y.T, metric="euclidean")
    return path[::-1]


def parallel_units(
    corpus: Mapping[str, Mapping[str, np.ndarray]],
    n_units: int,
    *,
    pivot: str = "",
    seed: int = 0,
    label_only: Sequence[str] = (),
) -> dict[tuple[str, str], np.ndarray]:
    """Speaker-invariant unit labels per (voice, sentence) on HuBERT's frame grid.

    Args:
        corpus: voice -> sentence id -> 16 kHz waveform; sentences present in the pivot voice
            and at least one other are used.
        n_units: number of k-means clusters.
        label_only: voices that get labels (aligned to the pivot) without shaping the units,
            e.g. a held-out voice to measure how well the encoder generalises.
    Returns:
        (voice, sentence) -> ``int64 [T]`` labels in ``[0, n_units)``, ``T = num_frames(len)``.
    """
    import faiss

    voices = sorted(corpus)
    pivot = pivot or voices[0]
    if pivot not in corpus:
        raise ValueError(f"pivot voice {pivot!r} is not in the corpus ({voices})")
    feats: dict[tuple[str, str], np.ndarray] = {}
    for voice in voices:
        per = {s: frame_mfcc(w) for s, w in corpus[voice].items()}
        stacked = np.concatenate(list(per.values()))
        mean, std = stacked.mean(0), stacked.std(0) + 1e-5
        feats.update({(voice, s): (m - mean) / std for s, m in per.items()})

    consensus: dict[str, np.ndarray] = {}
    paths: dict[tuple[str, str], np.ndarray] = {}
    for sentence in sorted(corpus[pivot]):
        ref = feats[(pivot, sentence)]
        total, count = ref.copy(), np.ones(len(ref))
        for voice in voices:
            if voice == pivot or sentence not in corpus[voice]:
                continue
            other = feats[(voice, sentence)]
            path = dtw_path(ref, other)
            paths[(voice, sentence)] = path
            if voice in label_only:
                continue
            np.add.at(total, path[:, 0], other[path[:, 1]])
            np.add.at(count, path[:, 0], 1.0)
        consensus[sentence] = (total / count[:, None]).astype(np.float32)

    frames = np.concatenate(list(consensus.values()))
    kmeans = faiss.Kmeans(frames.shape[1], n_units, niter=50, seed=seed + 1, verbose=False)
    kmeans.train(frames)
    labels: dict[tuple[str, str], np.ndarray] = {}
    for sentence, cons in consensus.items():
        _, assign = kmeans.index.search(cons, 1)
        pivot_labels = assign[:, 0].astype(np.int64)
        labels[(pivot, sentence)] = pivot_labels
        for (voice, s), path in paths.items():
            if s != sentence:
                continue
            out = np.empty(len(feats[(voice, s)]), dtype=np.int64)
            out[path[:, 1]] = pivot_labels[path[:, 0]]  # last pivot frame wins on ties
            labels[(voice, s)] = out
    return labels


def _speed_perturb(
    wav: np.ndarray, labels: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Play ``wav`` ``factor`` times faster (pitch and formants up); labels follow the frames."""
    import soxr

    out = soxr.resample(wav, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ")
    n = num_frames(len(out))
    src = np.minimum(np.round(np.arange(n) * factor).astype(np.int64), len(labels) - 1)
    return out.astype(np.float32), labels[src]


class _Batches:
    """Random crops (with speed perturbation) of labelled utterances, reproducible by seed."""

    def __init__(
        self, items: Sequence[tuple[np.ndarray, np.ndarray]], cfg: EncoderTrainConfig
    ) -> None:
        self.items, self.cfg = items, cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.crop_frames = int(cfg.crop_s * SAMPLE_RATE) // HOP

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        wavs, labs = [], []
        n = self.crop_frames
        for i in self.rng.integers(len(self.items), size=self.cfg.batch_size):
            wav, lab = self.items[i]
            factor = 1 + self.rng.uniform(-self.cfg.speed_range, self.cfg.speed_range)
            wav, lab = _speed_perturb(wav, lab, factor)
            # Preprocessing and recordings leave peaks anywhere from quiet to near full scale.
            wav = wav * (self.rng.uniform(0.3, 0.95) / max(float(np.abs(wav).max()), 1e-6))
            need = (n - 1) * HOP + WINDOW
            if len(wav) < need:
                wav = np.pad(wav, (0, need - len(wav)))
                lab = np.pad(lab, (0, n - len(lab)), constant_values=-100)
            start = int(self.rng.integers(len(lab) - n + 1))
            # Dither: a crop of digital silence makes GroupNorm's variance 0 and its gradient
            # blow up (NaN weights after one step).
            crop = wav[start * HOP : start * HOP + need]
            wavs.append(crop + self.rng.normal(0, 1e-4, len(crop)).astype(np.float32))
            labs.append(lab[start : start + n])
        return torch.from_numpy(np.stack(wavs)), torch.from_numpy(np.stack(labs))


def unit_logits(
    encoder: ContentEncoder, label_embs: torch.Tensor, wav: torch.Tensor
) -> torch.Tensor:
    """HuBERT's prediction head on RVC v1 features: ``[B, T, n_units]``."""
    proj = encoder.final_proj
    assert proj is not None
    feats = proj(encoder.forward_layers(wav, OUTPUT_LAYER["v1"]))
    return F.normalize(feats, dim=-1) @ F.normalize(label_embs, dim=-1).T / 0.1


def unit_accuracy(
    encoder: ContentEncoder,
    label_embs: torch.Tensor,
    items: Sequence[tuple[np.ndarray, np.ndarray]],
) -> float:
    """Frame accuracy of the unit prediction over whole utterances."""
    right = total = 0
    with torch.no_grad():
        for wav, lab in items:
            pred = unit_logits(encoder, label_embs, torch.from_numpy(wav)[None]).argmax(-1)[0]
            n = min(len(pred), len(lab))
            right += int((pred[:n].numpy() == lab[:n]).sum())
            total += n
    return right / max(total, 1)


def train_encoder(
    encoder: ContentEncoder,
    train_items: Sequence[tuple[np.ndarray, np.ndarray]],
    cfg: EncoderTrainConfig,
    *,
    label_embs: torch.Tensor | None = None,
    eval_sets: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]] | None = None,
    eval_every: int = 250,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Train ``encoder`` in place to predict the units; returns (label embeddings, history)."""
    torch.manual_seed(cfg.seed)
    encoder.requires_grad_(True)
    proj = encoder.final_proj
    if proj is None:
        raise ValueError("the encoder needs final_proj (RVC v1 features) to be trained")
    if label_embs is None:
        label_embs = torch.randn(cfg.n_units, proj.out_features) * 0.1
    label_embs = torch.nn.Parameter(label_embs.clone())
    params = [p for p in encoder.parameters() if p.requires_grad] + [label_embs]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        ),
    )
    batches = _Batches(train_items, cfg)
    history: dict[str, Any] = {"loss": [], "eval": []}
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        wav, lab = next(batches)
        logits = unit_logits(encoder, label_embs, wav)
        n = min(logits.shape[1], lab.shape[1])
        loss = F.cross_entropy(logits[:, :n].reshape(-1, cfg.n_units), lab[:, :n].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        history["loss"].append(loss.item())
        if eval_sets and (step % eval_every == 0 or step == cfg.steps):
            scores = {name: unit_accuracy(encoder, label_embs, s) for name, s in eval_sets.items()}
            history["eval"].append({"step": step, **scores})
            recent = float(np.mean(history["loss"][-eval_every:]))
            log.info(
                "step %d/%d loss %.3f %s (%.0f s)", step, cfg.steps, recent,
                " ".join(f"{k} {v:.3f}" for k, v in scores.items()),
                time.perf_counter() - start,
            )  # fmt: skip
    encoder.requires_grad_(False)
    history["train_s"] = time.perf_counter() - start
    history["config"] = asdict(cfg)
    return label_embs.detach(), history


def fairseq_weights(encoder: ContentEncoder, label_embs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The encoder's weights under fairseq's names, ``label_embs_concat`` included."""
    from rvc_lora.features.fairseq_layout import hf_to_fairseq_key

    norm = encoder.hubert.config.feat_extract_norm
    wn = encoder._weight_norm_names()
    out: dict[str, torch.Tensor] = {}
    for key, value in encoder.flat_state_dict().items():
        name = hf_to_fairseq_key(key, norm, wn)
        if name is None:
            raise ValueError(f"no fairseq name for encoder weight {key}")
        out[name] = value.detach().clone()
    if "mask_emb" not in out:
        out["mask_emb"] = torch.zeros(encoder.hubert.config.hidden_size)
    rows = torch.zeros(_SPECIAL_SYMBOLS + 500, label_embs.shape[1])
    rows[_SPECIAL_SYMBOLS : _SPECIAL_SYMBOLS + len(label_embs)] = label_embs
    out["label_embs_concat"] = rows
    return out


def load_corpus(
    root: Path, voices: Sequence[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """``root/<voice>/<sentence>.flac|wav`` -> voice -> sentence -> 16 kHz float32 waveform."""
    from rvc_lora.audio import load_audio

    corpus: dict[str, dict[str, np.ndarray]] = {}
    for voice_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if voices is not None and voice_dir.name not in voices:
            continue
        files = sorted(p for p in voice_dir.iterdir() if p.suffix.lower() in {".flac", ".wav"})
        corpus[voice_dir.name] = {f.stem: load_audio(f, SAMPLE_RATE)[0] for f in files}
    return corpus
