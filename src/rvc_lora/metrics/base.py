"""The torchmetrics base every utterance-level metric shares: per-key sum and count states."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric


class UtteranceMean(Metric):
    """Mean over utterances of one or more per-utterance values.

    Subclasses set :attr:`keys` and call :meth:`_add` from ``update``. Each key keeps a float64
    sum and an integer count (both summed across processes), so ``compute()`` equals the mean of
    the functional values. NaN values (e.g. PESQ on a file without speech) are skipped, not
    counted; a key with no finite value computes to NaN.
    """

    keys: tuple[str, ...] = ("value",)
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for key in self.keys:
            zero = torch.tensor(0.0, dtype=torch.float64)
            self.add_state(f"sum_{key}", default=zero, dist_reduce_fx="sum")
            self.add_state(f"count_{key}", default=torch.tensor(0), dist_reduce_fx="sum")

    def _add(self, **values: float) -> None:
        for key, value in values.items():
            if math.isnan(value):
                continue
            setattr(self, f"sum_{key}", getattr(self, f"sum_{key}") + float(value))
            setattr(self, f"count_{key}", getattr(self, f"count_{key}") + 1)

    def _mean(self, key: str) -> torch.Tensor:
        count = getattr(self, f"count_{key}")
        if int(count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return getattr(self, f"sum_{key}") / count

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The mean (a 0-d float64 tensor), or ``{key: mean}`` for a metric with several keys."""
        if len(self.keys) == 1:
            return self._mean(self.keys[0])
        return {key: self._mean(key) for key in self.keys}


class PairMean(UtteranceMean):
    """:class:`UtteranceMean` of a functional metric ``score(converted, reference, sr, **options)``.

    Subclasses set :attr:`keys` and :attr:`score` (a ``staticmethod``); a score returning a dict
    fills its keys, a float fills ``keys[0]``.

    Args:
        sr: sample rate of every pair passed to ``update(converted, reference)``.
        **options: keyword options of ``score``.
    """

    is_differentiable = False

    def __init__(self, sr: int, **options: Any) -> None:
        from rvc_lora.metrics.audio import check_sr

        super().__init__()
        self.sr = check_sr(sr)
        self.options = options

    @staticmethod
    def score(converted: Any, reference: Any, sr: int, **options: Any) -> float | dict[str, float]:
        raise NotImplementedError

    def update(self, converted: Any, reference: Any) -> None:
        values = self.score(converted, reference, self.sr, **self.options)
        self._add(**(values if isinstance(values, dict) else {self.keys[0]: values}))
