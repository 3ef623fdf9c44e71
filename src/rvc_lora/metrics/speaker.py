"""Speaker similarity (SECS): cosine similarity of resemblyzer's GE2E speaker embeddings.

The encoder is resemblyzer's network (3-layer LSTM 40 -> 256, Linear 256 -> 256, ReLU,
L2-normalised), rebuilt here so its bundled ``pretrained.pt`` is read by the weights-only
unpickler (:func:`rvc_lora.utils.safe_load.safe_torch_load`): ``resemblyzer.VoiceEncoder``
calls ``torch.load`` without ``weights_only``, which on torch < 2.6 may run code from the file.
Audio goes through resemblyzer's own preprocessing (resampling to 16 kHz, volume
normalisation, webrtcvad silence trimming) and its partial-utterance embedding (1.6 s windows,
averaged and re-normalised), so the embeddings match resemblyzer's exactly.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from rvc_lora.metrics.audio import Waveform, as_mono, check_sr
from rvc_lora.metrics.base import UtteranceMean
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

EMBED_DIM = 256
# Parameters of GE2E's training loss (a learned scale and bias of the similarity matrix): in
# the checkpoint, not part of the encoder.
_LOSS_KEYS = frozenset({"similarity_weight", "similarity_bias"})


def _resemblyzer() -> tuple[ModuleType, ModuleType]:
    """``(resemblyzer.audio, resemblyzer.voice_encoder)``, imported quietly on first use."""
    with warnings.catch_warnings():
        # resemblyzer imports scipy.ndimage.morphology (deprecated) and webrtcvad imports
        # pkg_resources (deprecated): neither is ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from resemblyzer import audio, voice_encoder
    return audio, voice_encoder


def bundled_weights_path() -> Path:
    """Path of the ``pretrained.pt`` shipped inside the resemblyzer package."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise ImportError(
            "speaker similarity needs the 'resemblyzer' package: pip install resemblyzer"
        )
    return Path(spec.origin).parent / "pretrained.pt"


class SpeakerEncoder(nn.Module):
    """resemblyzer's GE2E speaker encoder (its ``VoiceEncoder`` network, without the loader)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, EMBED_DIM)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """Mel frames ``[B, T, 40]`` -> L2-normalised embeddings ``[B, 256]``."""
        _, (hidden, _) = self.lstm(mels)  # hidden: [layers, B, 256]
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def load_speaker_encoder(path: str | os.PathLike[str] | None = None) -> SpeakerEncoder:
    """A :class:`SpeakerEncoder` in eval mode with weights from ``path`` (default: resemblyzer's).

    Raises:
        CheckpointError: the file is unsafe or unreadable, or its keys do not match the network
            (apart from GE2E's two loss parameters, which are expected and dropped).
    """
    path = Path(path) if path is not None else bundled_weights_path()
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise CheckpointError(f"{path}: not a resemblyzer checkpoint (no 'model_state' entry)")
    state = {k: v for k, v in checkpoint["model_state"].items() if k not in _LOSS_KEYS}
    encoder = SpeakerEncoder()
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path}: does not fit resemblyzer's speaker encoder (missing {missing}, "
            f"unexpected {unexpected}, shape mismatch {mismatched})"
        )
    encoder.load_state_dict(state)
    return encoder.eval()


@functools.lru_cache(maxsize=1)
def default_speaker_encoder() -> SpeakerEncoder:
    """resemblyzer's bundled encoder, loaded once per process."""
    return load_speaker_encoder()


def preprocess(wav: Waveform, sr: int) -> np.ndarray:
    """resemblyzer's ``preprocess_wav``: 16 kHz, -30 dBFS (raise only), long silences trimmed.

    Raises:
        ValueError: the signal is digitally silent or the VAD finds no speech in it.
    """
    x = as_mono(wav).astype(np.float32)
    if not np.any(x):
        raise ValueError("speaker embedding: the signal is silent")
    audio, _ = _resemblyzer()
    out = audio.preprocess_wav(x, source_sr=check_sr(sr))
    if len(out) == 0:
        raise ValueError("speaker embedding: the voice activity detector found no speech")
    return out


@torch.no_grad()
def embed_preprocessed(wav16k: np.ndarray, encoder: SpeakerEncoder | None = None) -> np.ndarray:
    """resemblyzer's ``embed_utterance`` on a preprocessed 16 kHz waveform -> ``[256]`` unit vector.

    The utterance is cut into 1.6 s partials (rate 1.3 per second, a last partial kept when at
    least 75 % covered), each embedded; the mean is re-normalised.
    """
    audio, voice_encoder = _resemblyzer()
    encoder = encoder or default_speaker_encoder()
    wav_slices, mel_slices = voice_encoder.VoiceEncoder.compute_partial_slices(
        len(wav16k), rate=1.3, min_coverage=0.75
    )
    if wav_slices[-1].stop >= len(wav16k):
        wav16k = np.pad(wav16k, (0, wav_slices[-1].stop - len(wav16k)))
    mel = audio.wav_to_mel_spectrogram(wav16k)  # [T, 40]
    mels = torch.from_numpy(np.stack([mel[s] for s in mel_slices]))  # [P, 160, 40]
    device = next(encoder.parameters()).device
    partials = encoder(mels.to(device)).cpu().double().numpy()  # [P, 256]
    return _unit(partials.mean(axis=0))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def speaker_embedding(
    wav: Waveform, sr: int, *, encoder: SpeakerEncoder | None = None
) -> np.ndarray:
    """Speaker embedding ``[256]`` (float64, unit norm) of a waveform ``[N]`` at ``sr``."""
    return embed_preprocessed(preprocess(wav, sr), encoder)


def mean_embedding(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Re-normalised mean of unit embeddings ``[K, 256]`` -> ``[256]`` (resemblyzer's
    ``embed_speaker``)."""
    stacked = np.asarray(embeddings, dtype=np.float64)
    if stacked.ndim != 2 or len(stacked) == 0:
        raise ValueError(f"expected embeddings [K, D] with K >= 1, got shape {list(stacked.shape)}")
    return _unit(stacked.mean(axis=0))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def speaker_similarity(wav_a: Waveform, sr_a: int, wav_b: Waveform, sr_b: int) -> float:
    """SECS: cosine similarity of two utterances' speaker embeddings (1 = same voice).

    resemblyzer embeddings are non-negative, so the value lies in [0, 1].
    """
    return cosine(speaker_embedding(wav_a, sr_a), speaker_embedding(wav_b, sr_b))


def reference_embedding(references: Sequence[Waveform], sr: int) -> np.ndarray:
    """Speaker embedding ``[256]`` of a set of utterances ``[N_k]`` at ``sr``: their
    re-normalised mean."""
    if len(references) == 0:
        raise ValueError("reference_embedding: need at least one reference utterance")
    return mean_embedding([speaker_embedding(w, sr) for w in references])


def speaker_similarity_to_set(
    wav: Waveform, sr: int, references: Sequence[Waveform], references_sr: int | None = None
) -> float:
    """SECS of ``wav`` against the mean embedding of ``references`` (at ``references_sr``,
    default ``sr``)."""
    ref = reference_embedding(references, sr if references_sr is None else references_sr)
    return cosine(speaker_embedding(wav, sr), ref)


class SpeakerSimilarity(UtteranceMean):
    """Mean SECS of converted utterances against one fixed reference embedding.

    Args:
        reference: the target speaker's embedding ``[256]`` (e.g. from
            :func:`reference_embedding`), numpy or tensor.
        sr: sample rate of the waveforms passed to ``update(converted)``.
    """

    keys = ("secs",)
    higher_is_better = True
    is_differentiable = False

    def __init__(self, reference: np.ndarray | torch.Tensor, sr: int) -> None:
        super().__init__()
        if isinstance(reference, torch.Tensor):
            reference = reference.detach().cpu().numpy()
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != (EMBED_DIM,) or not np.all(np.isfinite(ref)) or not np.any(ref):
            raise ValueError(
                f"reference must be a finite non-zero [{EMBED_DIM}] embedding, got shape {list(ref.shape)}"
            )
        self.reference = _unit(ref)
        self.sr = check_sr(sr)

    @classmethod
    def from_references(cls, references: Sequence[Waveform], sr: int) -> SpeakerSimilarity:
        """Against the mean embedding of reference utterances at ``sr``."""
        return cls(reference_embedding(references, sr), sr)

    def update(self, converted: Waveform) -> None:
        self._add(secs=cosine(speaker_embedding(converted, self.sr), self.reference))
