"""Cut recordings at long silences, as RVC's slicer (RVC_FACTS.md §8).

Defaults: threshold -42 dB, segments at least 1500 ms, silences of at least 400 ms are cut,
15 ms analysis hop, at most 500 ms of silence kept at each side of a cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SlicerConfig:
    threshold_db: float = -42.0
    min_length_ms: int = 1500
    min_interval_ms: int = 400
    hop_ms: int = 15
    max_sil_kept_ms: int = 500

    def __post_init__(self) -> None:
        if not self.min_length_ms >= self.min_interval_ms >= self.hop_ms > 0:
            raise ValueError("slicer needs min_length_ms >= min_interval_ms >= hop_ms > 0")
        if self.max_sil_kept_ms < self.hop_ms:
            raise ValueError("slicer needs max_sil_kept_ms >= hop_ms")


def frame_rms(y: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """Centred RMS per hop, ``[1 + len(y) // hop]``."""
    pad = frame_length // 2
    padded = np.pad(y.astype(np.float64), (pad, pad))
    n_frames = 1 + len(y) // hop
    idx = np.arange(frame_length)[None, :] + hop * np.arange(n_frames)[:, None]
    idx = np.minimum(idx, len(padded) - 1)
    return np.sqrt(np.mean(padded[idx] ** 2, axis=1))


def slice_audio(
    y: np.ndarray, sr: int, cfg: SlicerConfig = SlicerConfig()
) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` of the non-silent parts of ``y``.

    A silence splits the audio only if it lasts ``min_interval_ms`` and the part before it is at
    least ``min_length_ms`` long; the cut lands on the quietest frame, and long silences are
    trimmed to ``max_sil_kept_ms`` on each side. Pure silence gives ``[]``.
    """
    hop = max(1, round(sr * cfg.hop_ms / 1000))
    min_interval = max(1, round(sr * cfg.min_interval_ms / 1000 / hop))
    min_length = max(1, round(sr * cfg.min_length_ms / 1000 / hop))
    max_kept = max(1, round(sr * cfg.max_sil_kept_ms / 1000 / hop))
    frame_length = min(round(sr * cfg.min_interval_ms / 1000), 4 * hop)
    rms = frame_rms(y, frame_length, hop)
    silent = rms < 10 ** (cfg.threshold_db / 20)
    n = len(rms)
    if silent.all():
        return []
    if n <= min_length:
        return [(0, len(y))]

    # Runs of silent frames [s, e).
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))

    def quietest(lo: int, hi: int, last: bool = False) -> int:
        # Ties (digital silence) resolve towards the speech: the first frame when ending a
        # segment, the last frame when starting one.
        window = rms[lo:hi]
        return lo + (
            len(window) - 1 - int(np.argmin(window[::-1])) if last else int(np.argmin(window))
        )

    spans: list[tuple[int, int]] = []
    start = 0  # frame where the current segment begins
    for s, e in runs:
        if s == 0:  # leading silence: start at most max_kept frames before the speech
            start = quietest(max(e - max_kept, 0), e, last=True)
            continue
        if e == n:  # trailing silence: end at most max_kept frames after the speech
            spans.append((start, quietest(s, min(s + max_kept, n))))
            start = n
            break
        if e - s < min_interval or s - start < min_length:
            continue  # too short a pause, or the segment so far is too short: keep it inside
        end = quietest(s, min(s + max_kept, e))
        spans.append((start, end))
        start = max(end, quietest(max(e - max_kept, s), e, last=True))
    if start < n:
        spans.append((start, n))
    out = []
    for a, b in spans:
        a_s, b_s = a * hop, min(b * hop, len(y))
        if b_s > a_s and not silent[a : max(b, a + 1)].all():
            out.append((a_s, b_s))
    return out
