"""Metrics tests run torch on one thread: the work per utterance is small, and two intra-op
threads on cores shared with other jobs stall for seconds at a time (seen: 0.07 s -> 7 s per
speaker embedding), which would make the timings of this package meaningless."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
