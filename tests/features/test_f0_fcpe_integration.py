"""FCPE as an F0 method everywhere one is chosen: batched preparation, cache keys, ``auto``,
inference and the evaluation's F0 metrics. A tiny FCPE checkpoint in the real file layout stands
in for ``fcpe_c_v001.pt`` (same code path, random weights, fast)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from rvc_lora.data.cache import read_entry
from rvc_lora.data.datamodule import VoiceDataModule
from rvc_lora.data.features_cache import FeatureCacheBuilder, FeatureSettings
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.synthetic import phrases, voiced
from rvc_lora.features.f0 import compute_f0, compute_f0_fcpe_batch, resolve_f0_method
from rvc_lora.features.fcpe import FCPE, FCPEConfig, FCPENet, checkpoint_dict, load_fcpe
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.utils.errors import CheckpointError

# A batched forward pass rounds differently from a one-track pass (FCPE.infer_batch): a few
# float32 ulps of Hz on the real weights (~2e-5 Hz at 150 Hz); the tiny random net's flat
# saliences amplify that in the weighted mean. Any wrong track, range or length is Hz off.
BATCH_RTOL = 1e-5  # measured: 1.6e-6 (tiny), 1.5e-7 (real weights)


def _tiny_fcpe(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(checkpoint_dict(FCPENet(FCPEConfig(hidden=16, n_layers=2))), path)
    return path


@pytest.fixture(scope="module")
def fcpe_path(tmp_path_factory) -> Path:
    return _tiny_fcpe(tmp_path_factory.mktemp("fcpe") / "fcpe_c_v001.pt")


@pytest.fixture(scope="module")
def fcpe(fcpe_path) -> FCPE:
    return load_fcpe(fcpe_path)


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory) -> Path:
    return write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("enc") / "hubert_tiny.pt")


def _assert_same_track(batched: np.ndarray, alone: np.ndarray) -> None:
    assert batched.dtype == alone.dtype == np.float32 and batched.shape == alone.shape
    assert np.array_equal(batched > 0, alone > 0)  # the same voicing
    np.testing.assert_allclose(batched, alone, rtol=BATCH_RTOL, atol=0)


# -- the batched F0 ------------------------------------------------------------------------


def test_batch_equals_compute_f0_per_track(fcpe) -> None:
    tracks = [
        voiced(16000, 1.0, f0=140, seed=1),
        voiced(16000, 1.0, f0=220, seed=2),  # same length: shares the pass with the first
        voiced(16000, 0.73, f0=180, seed=3),
        np.zeros(8000, dtype=np.float32),  # digital silence
        voiced(16000, 0.005, seed=4),  # under one frame
    ]
    p_lens = [len(t) // 160 for t in tracks]
    p_lens[2] += 7  # padded on the right, as compute_f0 does
    p_lens[1] -= 5  # trimmed
    got = compute_f0_fcpe_batch(tracks, fcpe, p_lens=p_lens, f0_min=80, f0_max=300)
    for track, p_len, f0 in zip(tracks, p_lens, got, strict=True):
        alone = compute_f0(track, "fcpe", fcpe=fcpe, p_len=p_len, f0_min=80, f0_max=300)
        _assert_same_track(f0, alone)
    assert all(np.all((f == 0) | ((f >= 80) & (f <= 300))) for f in got)  # fcpe_range applied
    assert (got[0] > 0).any() and not got[3].any() and not got[4].any()


def test_batch_refuses_bad_tracks(fcpe) -> None:
    with pytest.raises(ValueError, match="track 1"):
        compute_f0_fcpe_batch([np.zeros(1600), np.full(1600, np.nan)], fcpe)
    with pytest.raises(ValueError, match="2 tracks but 1 p_lens"):
        compute_f0_fcpe_batch([np.zeros(1600)] * 2, fcpe, p_lens=[10])


# -- preparation -----------------------------------------------------------------------------


def _voice(root: Path) -> Path:
    """A long phrase (chunks of 3.7 s: two of one length) and a short one."""
    root.mkdir(exist_ok=True)
    sf.write(root / "long.wav", phrases(16000, n=1, seconds=8.0, seed=1), 16000)
    sf.write(root / "short.wav", phrases(16000, n=1, seconds=1.5, seed=2, f0=220), 16000)
    return root


def _features(encoder_path, fcpe_path, **kw) -> FeatureSettings:
    kw.setdefault("f0_method", "fcpe")
    return FeatureSettings(
        version="v1", encoder_path=str(encoder_path), fcpe_path=str(fcpe_path), **kw
    )


def _builder(cache: Path, features: FeatureSettings) -> FeatureCacheBuilder:
    return FeatureCacheBuilder(cache, PrepSettings(sr=16000), features, progress=False)


def test_prepared_fcpe_f0_is_batched_and_equals_compute_f0(
    tmp_path, encoder_path, fcpe_path, fcpe, monkeypatch
) -> None:
    voice = _voice(tmp_path / "voice")
    batches: list[int] = []
    salience = FCPE.salience

    def spy(self, wav16k):
        batches.append(wav16k.shape[0])
        return salience(self, wav16k)

    monkeypatch.setattr(FCPE, "salience", spy)
    report = _builder(tmp_path / "cache", _features(encoder_path, fcpe_path)).build(
        voice, sorted(voice.iterdir())
    )
    assert report.slices_extracted == len(report.items) >= 4
    long_items = [i for i in report.items if i.source == "long.wav"]
    lengths = [len(read_entry(i.slice_path)["wav16k"]) for i in long_items]
    assert len(lengths) > len(set(lengths))  # equal-length slices ...
    assert max(batches) >= 2 and len(batches) < len(report.items)  # ... shared a pass
    monkeypatch.setattr(FCPE, "salience", salience)
    for item in report.items:
        wav16k = read_entry(item.slice_path)["wav16k"]
        cached = read_entry(item.feature_path)["f0"]
        assert len(cached) == len(wav16k) // 160 == item.frames
        _assert_same_track(cached, compute_f0(wav16k, "fcpe", fcpe=fcpe))
    assert any((read_entry(i.feature_path)["f0"] > 0).any() for i in report.items)


@pytest.mark.slow  # each spawned worker imports torch afresh
def test_pool_writes_the_fcpe_f0_of_one_process(tmp_path, encoder_path, fcpe_path) -> None:
    voice = _voice(tmp_path / "voice")
    threads = torch.get_num_threads()
    # FCPE's bits follow the thread count: the workers (one thread each) must run it on the
    # main process's count to write its F0.
    torch.set_num_threads(2)
    try:
        reports = {}
        for workers in (1, 2):
            builder = FeatureCacheBuilder(
                tmp_path / f"cache{workers}",
                PrepSettings(sr=16000),
                _features(encoder_path, fcpe_path),
                num_workers=workers,
                progress=False,
            )
            reports[workers] = builder.build(voice, sorted(voice.iterdir()))
    finally:
        torch.set_num_threads(threads)
    assert builder._f0_models is None  # the workers ran FCPE
    # (This data happens to give the same bits on 1 and 2 threads; the thread rule itself is
    # checked by test_fcpe_runs_on_the_thread_count_it_is_given.)
    pairs = list(zip(reports[1].items, reports[2].items, strict=True))
    assert len(pairs) >= 4
    for a, b in pairs:
        assert np.array_equal(read_entry(a.feature_path)["f0"], read_entry(b.feature_path)["f0"])


def test_fcpe_runs_on_the_thread_count_it_is_given(
    tmp_path, encoder_path, fcpe_path, monkeypatch
) -> None:
    # A pool worker (one thread) runs FCPE on the main process's count (weight_threads), since
    # the real weights' F0 changes in its last bits with the count (2e-4 Hz, 1 vs 2 threads).
    seen: list[int] = []
    salience = FCPE.salience
    monkeypatch.setattr(
        FCPE, "salience", lambda self, w: seen.append(torch.get_num_threads()) or salience(self, w)
    )
    builder = _builder(tmp_path / "cache", _features(encoder_path, fcpe_path))
    own = torch.get_num_threads()
    builder.weight_threads = own + 2
    chunk = {"wav16k": voiced(16000, 1.0), "feature_path": tmp_path / "e.npz"}
    builder.finish({"chunks": [chunk]})
    assert seen == [own + 2] and torch.get_num_threads() == own
    assert chunk["extracted"] and chunk["frames"] == 100


def test_feature_key_names_the_fcpe_weights(tmp_path, encoder_path, fcpe_path) -> None:
    key = _builder(tmp_path, _features(encoder_path, fcpe_path)).feature_key()
    other = _tiny_fcpe(tmp_path / "other.pt", seed=1)
    assert _builder(tmp_path, _features(encoder_path, other)).feature_key() != key
    copy = tmp_path / "copy.pt"
    copy.write_bytes(fcpe_path.read_bytes())  # identity is the bytes, not the path
    assert _builder(tmp_path, _features(encoder_path, copy)).feature_key() == key
    harvest = _features(encoder_path, fcpe_path, f0_method="harvest")
    harvest_other = _features(encoder_path, other, f0_method="harvest")
    assert (
        _builder(tmp_path, harvest).feature_key() == _builder(tmp_path, harvest_other).feature_key()
    )  # the FCPE file does not matter to a method that does not use it
    missing = _features(encoder_path, tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="rvc-lora download fcpe"):
        _builder(tmp_path, missing).feature_key()


# -- the evaluation's F0 metrics ---------------------------------------------------------------


def test_f0_metrics_track_with_fcpe(fcpe_path, fcpe) -> None:
    from rvc_lora.evaluation.corpus import EvalError
    from rvc_lora.evaluation.run import metric_f0_tracker
    from rvc_lora.metrics import f0_metrics

    cfg = OmegaConf.create({"metric_f0_method": "fcpe", "features": {"fcpe_path": str(fcpe_path)}})
    method, models = metric_f0_tracker(cfg)
    assert method == "fcpe" and isinstance(models["fcpe"], FCPE)
    x = voiced(16000, 1.0, f0=150)
    y = voiced(16000, 1.0, f0=150 * 2 ** (100 / 1200), seed=5)  # 100 cents up
    same = f0_metrics(x, x, 16000, method="fcpe", align=False, f0_models=models)
    assert same["f0_rmse_cents"] == 0 and same["vuv_error"] == 0
    f0x = compute_f0(x, "fcpe", fcpe=fcpe)
    f0y = compute_f0(y, "fcpe", fcpe=fcpe)
    both = (f0x > 0) & (f0y > 0)
    want = np.sqrt(np.mean((1200 * np.log2(f0y[both] / f0x[both])) ** 2))
    got = f0_metrics(y, x, 16000, method="fcpe", align=False, f0_models=models)
    assert got["f0_rmse_cents"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="load_fcpe"):
        f0_metrics(x, x, 16000, method="fcpe", align=False)
    with pytest.raises(EvalError, match="metric_f0_method=crepe"):
        metric_f0_tracker(OmegaConf.create({"metric_f0_method": "crepe", "features": {}}))


# -- auto ----------------------------------------------------------------------------------


def test_auto_prefers_rmvpe_then_fcpe_and_logs_one_line(tmp_path, caplog) -> None:
    rmvpe, fcpe = tmp_path / "rmvpe.pt", tmp_path / "fcpe_c_v001.pt"
    fcpe.write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="rvc_lora.features.f0"):
        assert resolve_f0_method("auto", rmvpe, fcpe) == "fcpe"
    assert caplog.messages == [f"f0_method auto -> fcpe ({rmvpe} absent)"]
    rmvpe.write_bytes(b"x")
    assert resolve_f0_method("auto", rmvpe, fcpe) == "rmvpe"
    fcpe.unlink()
    assert resolve_f0_method("auto", rmvpe, fcpe) == "rmvpe"
    # Any other name passes through, whatever files exist.
    assert resolve_f0_method("harvest", tmp_path / "no", tmp_path / "no") == "harvest"


def test_auto_without_weights_is_one_line_naming_the_download(tmp_path) -> None:
    with pytest.raises(CheckpointError) as info:
        resolve_f0_method("auto", tmp_path / "rmvpe.pt", tmp_path / "fcpe_c_v001.pt")
    message = str(info.value)
    assert "\n" not in message and "rvc-lora download fcpe" in message
    assert "rvc-lora download`" in message and "harvest" in message


def test_auto_reaches_the_cache_key_resolved(tmp_path, encoder_path, fcpe_path) -> None:
    auto = _features(encoder_path, fcpe_path, f0_method="auto", rmvpe_path=str(tmp_path / "no"))
    builder = _builder(tmp_path, auto)
    assert builder.features.f0_method == "fcpe"
    explicit = _builder(tmp_path, _features(encoder_path, fcpe_path))
    assert builder.feature_key() == explicit.feature_key()


def test_data_module_resolves_auto_once(tmp_path, encoder_path, fcpe_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="rvc_lora.features.f0"):
        dm = VoiceDataModule(
            input_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), sample_rate=16000,
            hop_length=160, n_fft=512, encoder_path=str(encoder_path), f0_method="auto",
            rmvpe_path=str(tmp_path / "rmvpe.pt"), fcpe_path=str(fcpe_path), progress=False,
        )  # fmt: skip
        dm.builder(), dm.builder()
    assert dm.features.f0_method == "fcpe" and dm.features.fcpe_path == str(fcpe_path)
    assert sum("f0_method auto" in m for m in caplog.messages) == 1


def test_training_resolves_auto_in_the_config_it_hands_on(tmp_path, fcpe_path) -> None:
    from rvc_lora.training.run import resolve_run_f0_method

    cfg = OmegaConf.create(
        {
            "features": {
                "f0_method": "auto",
                "rmvpe_path": str(tmp_path / "rmvpe.pt"),
                "fcpe_path": str(fcpe_path),
            },
            "data": {"f0_method": "${features.f0_method}"},
        }
    )
    assert resolve_run_f0_method(cfg) == "fcpe"
    assert cfg.data.f0_method == "fcpe"  # what the data module (and its cache key) gets


def test_inference_reads_the_recorded_method_over_auto(tmp_path) -> None:
    from rvc_lora.inference.setup import run_config, trained_setting

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"features": {"f0_method": "auto"}}), run_dir / ".hydra/config.yaml"
    )
    ckpt = run_dir / "adapter.safetensors"
    assert run_config(ckpt).features.f0_method == "auto"  # no run_info.json: as saved
    (run_dir / "run_info.json").write_text(json.dumps({"f0_method": "fcpe"}))
    trained = run_config(ckpt)
    cfg = OmegaConf.create({"f0_method": None, "features": {"f0_method": "harvest"}})
    assert trained_setting(cfg, trained, "f0_method") == "fcpe"


@pytest.mark.slow  # a two-step training run, then a conversion
def test_a_run_trained_with_auto_records_and_converts_with_fcpe(
    tmp_path, fcpe_path, monkeypatch
) -> None:
    from rvc_lora.inference import pipeline
    from rvc_lora.inference.setup import conversion_setup, run_config
    from rvc_lora.models import build_synthesizer
    from rvc_lora.training.run import train
    from tests.training.conftest import compose_train, make_voice_folder

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    out = tmp_path / "run"
    features = [
        "features.f0_method=auto",
        f"features.rmvpe_path={tmp_path / 'absent' / 'rmvpe.pt'}",
        f"features.fcpe_path={fcpe_path}",
    ]
    cfg = compose_train(
        root, out, make_voice_folder(tmp_path / "voice"), [*features, "trainer.max_steps=2"]
    )
    (out / ".hydra").mkdir(parents=True)
    # What Hydra saves before the task runs (compose alone does not): features say auto.
    saved = {"features": OmegaConf.to_container(cfg.features, resolve=True)}
    OmegaConf.save(OmegaConf.create(saved), out / ".hydra" / "config.yaml")
    assert saved["features"]["f0_method"] == "auto"
    train(cfg)
    assert json.loads((out / "run_info.json").read_text())["f0_method"] == "fcpe"
    assert cfg.data.f0_method == "fcpe"  # the data module was handed the resolved name
    trained = run_config(out / "adapter.safetensors")
    assert trained.features.f0_method == "fcpe"
    # Inference with its defaults (f0_method null: the voice's own) tracks with FCPE.
    infer = OmegaConf.create(
        {
            "f0_method": None, "index_rate": 0.0, "protect": 0.33, "rms_mix_rate": 0.25,
            "filter_radius": 3, "speaker_id": 0, "seed": 0,
            "features": {"f0_method": "harvest", "rmvpe_path": "absent.pt"},
        }
    )  # fmt: skip
    options, pipe, _ = conversion_setup(infer, build_synthesizer("tiny"), trained, None)
    assert options.f0_method == "fcpe" and isinstance(pipe.fcpe, FCPE)
    assert pipeline.ConversionPipeline is type(pipe)
