"""Shared fixtures: deterministic seeds and small inputs for the tiny preset."""

from __future__ import annotations

import os

import pytest
import torch

UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core; two intra-op threads per worker would oversubscribe
    # the cores and make the suite several times slower.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def synth_inputs(config, f0: bool, frames: int = 40, batch: int = 2):
    """Random content features, pitch and speaker ids for ``infer``/``forward`` of ``config``."""
    g = torch.Generator().manual_seed(1234)
    phone = torch.randn(batch, frames, config.feature_dim, generator=g)
    lengths = torch.full((batch,), frames, dtype=torch.long)
    lengths[-1] = frames - frames // 4
    pitch = torch.randint(1, 256, (batch, frames), generator=g) if f0 else None
    pitchf = (torch.rand(batch, frames, generator=g) * 300 + 80) if f0 else None
    if pitchf is not None:
        pitchf[:, : frames // 5] = 0.0  # an unvoiced stretch exercises the noise branch
    sid = torch.arange(batch) % config.spk_embed_dim
    return phone, lengths, pitch, pitchf, sid
