"""Real-time factor: processing seconds per second of audio (below 1 = faster than real time)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
from torchmetrics import Metric


class Timer:
    """Wall-clock timer (``time.perf_counter``) as a context manager.

    Example:
        >>> with Timer() as t:
        ...     pass
        >>> t.seconds >= 0
        True
    """

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - self.start


def real_time_factor(processing_seconds: float, audio_seconds: float) -> float:
    """``processing_seconds / audio_seconds``."""
    if audio_seconds <= 0:
        raise ValueError(f"audio duration must be positive, got {audio_seconds} s")
    if processing_seconds < 0:
        raise ValueError(f"processing time must be >= 0, got {processing_seconds} s")
    return processing_seconds / audio_seconds


class RealTimeFactor(Metric):
    """Total processing time over total audio duration across utterances.

    The ratio of sums is the duration-weighted mean of the per-utterance factors, so a batch of
    short files does not outweigh one long file. Feed it with ``update(processing_seconds,
    audio_seconds)`` or time a block directly::

        rtf = RealTimeFactor()
        with rtf.measure(audio_seconds=len(wav) / sr):
            out = convert(wav)
        rtf.compute()
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("processing_seconds", default=zero, dist_reduce_fx="sum")
        self.add_state("audio_seconds", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, processing_seconds: float, audio_seconds: float) -> None:
        real_time_factor(processing_seconds, audio_seconds)  # validates both
        self.processing_seconds = self.processing_seconds + float(processing_seconds)
        self.audio_seconds = self.audio_seconds + float(audio_seconds)

    def compute(self) -> torch.Tensor:
        """0-d float64 tensor; NaN before any update."""
        if float(self.audio_seconds) == 0.0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.processing_seconds / self.audio_seconds

    @contextmanager
    def measure(self, audio_seconds: float) -> Iterator[Timer]:
        """Time the ``with`` block and add it with ``audio_seconds`` (nothing added on error)."""
        with Timer() as timer:
            yield timer
        self.update(timer.seconds, audio_seconds)
