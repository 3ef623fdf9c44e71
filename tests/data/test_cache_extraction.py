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


def test_parallel_jobs_extract_a_shared_entry_once(tmp_path, encoder_path, monkeypatch) -> None:
    """Two jobs (a multirun sharing one cache) build the same slice: the second waits on the
    entry's lock and reuses what the first wrote; the encoder and F0 run once."""
    import threading

    import rvc_lora.data.features_cache as fc
    import rvc_lora.data.slice_jobs as jobs
    import rvc_lora.features.f0 as f0_module

    voice, files = _folder(tmp_path)
    calls = {"content": 0, "f0": 0, "writes": 0}
    first_inside, second_waits = threading.Event(), threading.Event()
    content, compute_f0_, write_entry, entry_busy = (
        FeatureCacheBuilder._content,
        f0_module.compute_f0,
        fc.write_entry,
        jobs.entry_busy,
    )

    def slow_content(self, wav16k):
        calls["content"] += 1
        first_inside.set()
        assert second_waits.wait(20)  # hold the lock until the other job has seen it held
        return content(self, wav16k)

    def counted(name, fn):
        def wrapper(*a, **k):
            if name != "writes" or "features" in str(a[0]):
                calls[name] += 1
            return fn(*a, **k)

        return wrapper

    def busy(path):
        held = entry_busy(path)
        if held:
            second_waits.set()
        return held

    monkeypatch.setattr(FeatureCacheBuilder, "_content", slow_content)
    monkeypatch.setattr(f0_module, "compute_f0", counted("f0", compute_f0_))
    monkeypatch.setattr(fc, "write_entry", counted("writes", write_entry))
    monkeypatch.setattr(jobs, "entry_busy", busy)
    reports = {}

    def job(name):
        reports[name] = _builder(tmp_path, encoder_path).build(voice, files)

    first = threading.Thread(target=job, args=("first",))
    first.start()
    assert first_inside.wait(60)
    second = threading.Thread(target=job, args=("second",))
    second.start()
    first.join(60), second.join(60)
    assert calls == {"content": 1, "f0": 1, "writes": 1}
    assert (reports["first"].slices_extracted, reports["first"].slices_reused) == (1, 0)
    assert (reports["second"].slices_extracted, reports["second"].slices_reused) == (0, 1)
    assert reports["first"].items[0].feature_path == reports["second"].items[0].feature_path


def test_build_removes_stale_temp_files_of_killed_jobs(tmp_path, encoder_path) -> None:
    import os
    import time

    from rvc_lora.data.cache import STALE_TMP_SECONDS

    voice, files = _folder(tmp_path)
    item = _builder(tmp_path, encoder_path).build(voice, files).items[0]
    killed = item.feature_path.with_name(f".{item.feature_path.name}.k1ll3d.tmp")
    writing = item.feature_path.with_name(f".{item.feature_path.name}.l1v3.tmp")
    for p in (killed, writing):
        p.write_bytes(b"half an entry")
    past = time.time() - STALE_TMP_SECONDS - 5
    os.utime(killed, (past, past))
    again = _builder(tmp_path, encoder_path).build(voice, files)
    assert not killed.exists() and writing.exists()  # a live writer's temp file is left alone
    assert again.slices_reused == 1 and read_entry(item.feature_path) is not None
