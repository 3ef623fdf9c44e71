"""The extraction path of the feature cache: training F0 is unfiltered (RVC filters only at
conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rvc_lora.data.cache import CacheError, read_entry
from rvc_lora.data.datamodule import SpectrogramSettings, VoiceDataset
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


def test_training_reader_reports_damage_in_one_line_and_deletes_nothing(
    tmp_path, encoder_path
) -> None:
    voice, files = _folder(tmp_path)
    item = _builder(tmp_path, encoder_path).build(voice, files).items[0]
    ds = VoiceDataset([item], SpectrogramSettings(hop_length=160, n_fft=512))
    assert ds[0]["phone"].shape[1] == 256
    data = bytearray(item.feature_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    item.feature_path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"cache entry .*; run the preparation again") as info:
        ds[0]
    assert "\n" not in str(info.value) and str(item.feature_path) in str(info.value)
    assert item.feature_path.is_file()
    again = _builder(tmp_path, encoder_path).build(voice, files)  # the extraction path repairs it
    assert again.slices_extracted == 1 and ds[0]["phone"].shape[1] == 256
