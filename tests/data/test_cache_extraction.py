"""The extraction path of the feature cache: training F0 is unfiltered (RVC filters only at
conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rvc_lora.data.cache import read_entry
from rvc_lora.data.features_cache import FeatureCacheBuilder, FeatureSettings
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.synthetic import phrases
from rvc_lora.features.f0 import compute_f0
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("enc") / "hubert_tiny.pt")


def _builder(tmp_path, encoder_path, f0_method: str = "pm") -> FeatureCacheBuilder:
    features = FeatureSettings(version="v1", encoder_path=str(encoder_path), f0_method=f0_method)
    return FeatureCacheBuilder(tmp_path / "cache", PrepSettings(sr=16000), features, progress=False)


def _folder(tmp_path):
    voice = tmp_path / "voice"
    voice.mkdir()
    sf.write(voice / "a.wav", phrases(16000, n=1, seconds=1.6, seed=1), 16000)
    return voice, sorted(voice.iterdir())


def test_training_f0_is_extracted_without_the_median_filter(tmp_path, encoder_path) -> None:
    voice, files = _folder(tmp_path)
    builder = _builder(tmp_path, encoder_path, f0_method="harvest")
    item = builder.build(voice, files).items[0]
    wav16k = read_entry(item.slice_path)["wav16k"]
    cached = read_entry(item.feature_path)["f0"]
    unfiltered = compute_f0(wav16k, "harvest", filter_radius=0)
    filtered = compute_f0(wav16k, "harvest", filter_radius=3)
    assert np.array_equal(cached, unfiltered[: len(cached)])
    assert not np.array_equal(cached, filtered[: len(cached)])  # the filter matters here
