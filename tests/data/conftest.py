"""Fixtures shared by the data tests."""

from __future__ import annotations

import pytest

from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("enc") / "hubert_tiny.pt")
