"""How close an F0 track is to a reference: gross pitch error, fine error, voicing errors.

Tracks are Hz per frame with 0 for unvoiced, as :func:`rvc_lora.features.f0.compute_f0` returns
them. For a reference ``r`` and an estimate ``e`` of the same length:

- **GPE** (gross pitch error): % of the frames voiced in both whose error exceeds 20 %, i.e.
  ``|1200 log2(e / r)| > 1200 log2(1.2)`` (315.6 cents);
- **RMSE** in cents over the frames voiced in both that are *not* gross errors (the fine error:
  one octave jump would otherwise outweigh everything else);
- **VDE** (voicing decision error): % of all frames voiced in one track and not the other;
- **FFE** (F0 frame error, Chu & Alwan 2009): % of all frames with a voicing error or a gross
  error.

:class:`F0Counts` holds sums, not rates, so files pool by adding their counts: the pooled rate
weighs every frame alike (a long file counts more), never a mean of per-file rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

# 20 % above the reference in cents; a frame whose error is larger is a gross error.
GROSS_CENTS = 1200.0 * math.log2(1.2)


@dataclass(frozen=True)
class F0Counts:
    """Frame counts of one comparison (or of many, added up).

    Attributes:
        frames: frames compared.
        ref_voiced: frames voiced in the reference.
        est_voiced: frames voiced in the estimate.
        both_voiced: frames voiced in both.
        gross: frames voiced in both with an error above :data:`GROSS_CENTS`.
        voicing_errors: frames voiced in exactly one of the two tracks.
        sq_cents: sum of squared errors (cents) over the fine frames (voiced in both, not gross).
    """

    frames: int = 0
    ref_voiced: int = 0
    est_voiced: int = 0
    both_voiced: int = 0
    gross: int = 0
    voicing_errors: int = 0
    sq_cents: float = 0.0

    def __add__(self, other: F0Counts) -> F0Counts:
        return F0Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def fine(self) -> int:
        """Frames voiced in both that are not gross errors (those the RMSE averages)."""
        return self.both_voiced - self.gross

    @property
    def gpe(self) -> float:
        """Gross pitch error, % of the frames voiced in both (NaN when there are none)."""
        return _percent(self.gross, self.both_voiced)

    @property
    def rmse_cents(self) -> float:
        """RMS error in cents over the fine frames (NaN when there are none)."""
        return math.sqrt(self.sq_cents / self.fine) if self.fine else math.nan

    @property
    def vde(self) -> float:
        """Voicing decision error, % of all frames (NaN for no frames)."""
        return _percent(self.voicing_errors, self.frames)

    @property
    def ffe(self) -> float:
        """F0 frame error: % of all frames with a voicing error or a gross error."""
        return _percent(self.voicing_errors + self.gross, self.frames)

    def summary(self) -> dict[str, float | int | None]:
        """The counts and the four rates (rounded; None where undefined), for a JSON file."""
        rates = {"gpe": self.gpe, "rmse_cents": self.rmse_cents, "vde": self.vde, "ffe": self.ffe}
        out: dict[str, float | int | None] = {
            k: (None if math.isnan(v) else round(v, 4)) for k, v in rates.items()
        }
        counts = asdict(self)
        counts["sq_cents"] = round(counts["sq_cents"], 3)
        return {**out, **counts}


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else math.nan


def _track(name: str, f0: np.ndarray) -> np.ndarray:
    f0 = np.asarray(f0, dtype=np.float64)
    if f0.ndim != 1:
        raise ValueError(f"{name} F0 track must be 1-D, got shape {list(f0.shape)}")
    if not np.all(np.isfinite(f0)) or np.any(f0 < 0):
        raise ValueError(f"{name} F0 track must be finite Hz >= 0 (0 = unvoiced)")
    return f0


def f0_counts(reference: np.ndarray, estimate: np.ndarray) -> F0Counts:
    """Compare an estimated F0 track with a reference, frame by frame.

    Args:
        reference: ``[T]`` Hz, 0 = unvoiced.
        estimate: ``[T]`` Hz, 0 = unvoiced, on the same frames.
    Returns:
        The frame counts; its properties give GPE, RMSE (cents), VDE and FFE.
    Raises:
        ValueError: tracks of different lengths, not 1-D, negative or not finite.
    """
    ref = _track("reference", reference)
    est = _track("estimate", estimate)
    if ref.shape != est.shape:
        raise ValueError(f"F0 tracks differ in length: reference {len(ref)}, estimate {len(est)}")
    rv, ev = ref > 0, est > 0
    both = rv & ev
    cents = 1200.0 * np.log2(est[both] / ref[both])
    gross = np.abs(cents) > GROSS_CENTS
    return F0Counts(
        frames=len(ref),
        ref_voiced=int(rv.sum()),
        est_voiced=int(ev.sum()),
        both_voiced=int(both.sum()),
        gross=int(gross.sum()),
        voicing_errors=int((rv != ev).sum()),
        sq_cents=float(np.sum(cents[~gross] ** 2)),
    )


def pool(counts: list[F0Counts]) -> F0Counts:
    """Counts of several comparisons added up: rates over all their frames together."""
    return sum(counts, F0Counts())


def sample_track(track: np.ndarray, period_s: float, times_s: np.ndarray) -> np.ndarray:
    """A reference track read at other times (e.g. another method's frame centres).

    Between two voiced grid frames the value is interpolated linearly (as WORLD's synthesis
    moves F0 between frames); next to an unvoiced frame it is the nearest grid frame's value.
    Times on the grid (to 1e-9 of a period) return the grid values exactly.

    Args:
        track: ``[K]`` Hz, 0 = unvoiced; frame ``k`` at ``k * period_s`` seconds.
        period_s: the track's frame period in seconds.
        times_s: ``[T]`` times to read it at.
    Returns:
        ``[T]`` Hz; 0 (unvoiced) outside ``[0, (K - 1) * period_s]``.
    """
    track = _track("reference", track)
    pos = np.asarray(times_s, dtype=np.float64) / period_s
    on_grid = np.abs(pos - np.round(pos)) < 1e-9
    pos = np.where(on_grid, np.round(pos), pos)
    inside = (pos >= 0) & (pos <= len(track) - 1)
    pos = np.clip(pos, 0, len(track) - 1)
    k = np.minimum(np.floor(pos).astype(int), len(track) - 1)
    k1 = np.minimum(k + 1, len(track) - 1)
    frac = pos - k
    lo, hi = track[k], track[k1]
    nearest = np.where(frac < 0.5, lo, hi)
    value = np.where((lo > 0) & (hi > 0), lo + frac * (hi - lo), nearest)
    return np.where(inside, value, 0.0)
