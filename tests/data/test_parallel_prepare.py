"""The process pool of the preparation writes what the one-process path writes, and reports the
same skips and errors."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from rvc_lora.data.cache import CacheError, read_entry, read_json
from rvc_lora.data.features_cache import (
    FeatureCacheBuilder,
    FeatureSettings,
    PrepareReport,
    _weights_once,
)
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.slice_jobs import MAX_AUTO_WORKERS, resolve_workers
from rvc_lora.data.synthetic import phrases
from rvc_lora.utils.errors import ConfigError


def _voice(root: Path, bad: bool = False) -> list[Path]:
    """Four recordings of 2-5 s, one of them a copy (skipped as a twin); maybe two bad files."""
    root.mkdir()
    for i, n in enumerate((1, 2, 3)):
        sf.write(root / f"take{i}.wav", phrases(16000, n=n, seconds=1.3, seed=i), 16000)
    shutil.copy(root / "take1.wav", root / "take1 copy.wav")
    if bad:
        (root / "empty.wav").write_bytes(b"")
        (root / "readme.wav").write_text("not audio at all")
    return sorted(root.iterdir())


def _build(tmp_path: Path, name: str, encoder_path, workers, f0: str = "pm"):
    """``(builder, report)`` of one build into the cache ``tmp_path / name``."""
    features = FeatureSettings(version="v1", encoder_path=str(encoder_path), f0_method=f0)
    builder = FeatureCacheBuilder(
        tmp_path / name, PrepSettings(sr=16000), features, num_workers=workers, progress=False
    )
    voice = tmp_path / "voice"
    return builder, builder.build(voice, sorted(voice.iterdir()))


def _relative(report: PrepareReport, cache: Path) -> list[tuple]:
    return [
        (
            i.item_id,
            i.source,
            i.slice_path.relative_to(cache).as_posix(),
            i.feature_path.relative_to(cache).as_posix(),
            i.frames,
            i.span,
            i.segment,
        )
        for i in report.items
    ]


@pytest.mark.slow  # each spawned worker imports torch and transformers afresh
def test_pool_writes_the_same_slices_and_features_as_one_process(
    tmp_path, encoder_path, monkeypatch
) -> None:
    _voice(tmp_path / "voice")
    threads = torch.get_num_threads()
    # The main process on two threads (also while it starts the pool: the workers, one thread
    # each, compute the weight norm on the main process's count), whatever the test runner set.
    torch.set_num_threads(2)
    try:
        one, seq = _build(tmp_path, "seq", encoder_path, 1)
        pool, par = _build(tmp_path, "par", encoder_path, 2)
    finally:
        torch.set_num_threads(threads)
    assert one._encoder is not None and pool._encoder is None  # the workers ran the encoder
    assert one.weight_threads is None  # one process: exactly the computation of before
    assert _relative(par, tmp_path / "par") == _relative(seq, tmp_path / "seq")
    sources = {i.source for i in seq.items}
    assert len(seq.items) >= 4 and sources == {"take0.wav", "take1 copy.wav", "take2.wav"}
    counts = (seq.files_sliced, seq.slices_extracted, seq.slices_reused, seq.skipped)
    assert (par.files_sliced, par.slices_extracted, par.slices_reused, par.skipped) == counts
    assert seq.slices_extracted == len(seq.items) and "same audio as" in seq.skipped[0][1]
    for a, b in zip(seq.items, par.items, strict=True):
        for path_a, path_b in ((a.slice_path, b.slice_path), (a.feature_path, b.feature_path)):
            arrays_a, arrays_b = read_entry(path_a), read_entry(path_b)
            assert arrays_a.keys() == arrays_b.keys()
            for key in arrays_a:  # bit-exact: audio, content features, F0, coarse pitch
                assert np.array_equal(arrays_a[key], arrays_b[key]), (path_b, key)
    manifests = sorted((tmp_path / "seq" / "slices").glob("*/manifest.json"))
    assert len(manifests) == 3
    for m in manifests:
        assert read_json(m) == read_json(tmp_path / "par" / m.relative_to(tmp_path / "seq"))

    # A second run over the filled cache reuses every entry, without starting a pool.
    monkeypatch.setattr(multiprocessing, "get_context", None)
    _, again = _build(tmp_path, "par", encoder_path, 2)
    assert (again.slices_extracted, again.slices_reused, again.files_sliced) == (
        0,
        len(seq.items),
        0,
    )


@pytest.mark.slow  # each spawned worker imports torch and transformers afresh
def test_pool_skips_bad_files_with_the_same_summary(tmp_path, encoder_path, caplog) -> None:
    _voice(tmp_path / "voice", bad=True)
    summaries = {}
    for workers in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rvc_lora.data.features_cache"):
            _, report = _build(tmp_path, f"cache{workers}", encoder_path, workers)
        lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        summaries[workers] = (report.skipped, lines)
    skipped, lines = summaries[1]
    assert summaries[2] == summaries[1]
    assert [s for s, _ in skipped] == ["empty.wav", "readme.wav", "take1.wav"]
    assert all("\n" not in reason for _, reason in skipped)
    assert lines[-1] == "skipped 3 of 6 files: 1 empty, 1 not readable, 1 same audio"


@pytest.mark.slow  # each spawned worker imports torch and transformers afresh
def test_pool_stops_on_a_damaged_cache_with_the_same_one_line_error(tmp_path, encoder_path) -> None:
    """A folder where an entry belongs stops the build in a worker as in the main process."""
    _voice(tmp_path / "voice")
    _, report = _build(tmp_path, "cache", encoder_path, 1)
    errors = []
    for workers in (1, 2):
        entry = report.items[-1].feature_path
        entry.unlink()
        entry.mkdir()
        with pytest.raises(CacheError) as info:
            _build(tmp_path, "cache", encoder_path, workers)
        errors.append(str(info.value))
        entry.rmdir()
        _build(tmp_path, "cache", encoder_path, 1)  # the entry again, for the next round
    assert errors[0] == errors[1] and "\n" not in errors[0]
    assert errors[0].startswith(f"{report.items[-1].feature_path}: cache entry is a folder")


def test_worker_setting() -> None:
    cores = len(os.sched_getaffinity(0))
    assert resolve_workers("auto", 100) == min(cores, MAX_AUTO_WORKERS)
    assert resolve_workers("auto", 1) == 1  # never more processes than files
    assert resolve_workers(0, 10) == resolve_workers(1, 10) == 1  # the one-process path
    assert resolve_workers(3, 10) == 3 and resolve_workers(3, 2) == 2
    for bad in (-1, "two", 1.5, True):
        with pytest.raises(ConfigError, match="data.prepare_workers"):
            resolve_workers(bad, 10)
    settings = FeatureSettings()
    with pytest.raises(ConfigError, match="'many'"):
        FeatureCacheBuilder("cache", PrepSettings(sr=16000), settings, num_workers="many")


def test_workers_compute_the_weight_norm_on_the_main_process_thread_count() -> None:
    """HuBERT's weight-normed positional conv (its real size): the weight's norm is a parallel
    reduction, so its last bits follow the thread count; a worker (one thread) computes it on
    the main process's count."""
    torch.manual_seed(0)
    conv = nn.utils.parametrizations.weight_norm(
        nn.Conv1d(768, 768, 128, padding=64, groups=16), name="weight", dim=2
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)  # the main process
        with torch.no_grad():
            reference = conv.weight.clone()
        torch.set_num_threads(1)  # a worker
        with torch.no_grad(), _weights_once(conv, 4):
            assert torch.equal(conv.weight, reference)
            assert torch.get_num_threads() == 1  # the worker's own count is back
    finally:
        torch.set_num_threads(threads)
