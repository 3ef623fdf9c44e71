"""Retrieval index: RVC's build recipe, file round trip, the blend, and clear load errors."""

from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest

from rvc_lora.data.cache import features_from_cache, write_entry
from rvc_lora.features import index as index_mod
from rvc_lora.features.index import (
    FeatureIndex,
    RetrievalIndexError,
    build_index,
    load_index,
    n_ivf,
    save_index,
)


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2000, 256)).astype(np.float32)


@pytest.fixture(scope="module")
def built(feats):
    return build_index(feats)


def test_n_ivf_formula():
    assert n_ivf(10) == 1  # max(1, ...) keeps tiny sets buildable
    assert n_ivf(2000) == min(int(16 * 2000**0.5), 2000 // 39) == 51
    assert n_ivf(1_000_000) == 16_000


def test_build_follows_rvc_recipe(built, feats):
    ivf = faiss.extract_index_ivf(built)
    assert ivf.nlist == n_ivf(len(feats))
    assert ivf.nprobe == 1
    assert built.ntotal == len(feats) and built.d == 256
    stored = built.reconstruct_n(0, built.ntotal)
    # rows are shuffled but all present
    np.testing.assert_array_equal(np.sort(stored, axis=0), np.sort(feats, axis=0))


def test_large_sets_are_reduced_to_kmeans_centres(monkeypatch, feats):
    monkeypatch.setattr(index_mod, "KMEANS_ABOVE", 1000)
    monkeypatch.setattr(index_mod, "KMEANS_CENTRES", 40)
    assert build_index(feats).ntotal == 40
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)  # sklearn missing -> faiss.Kmeans
    assert build_index(feats).ntotal == 40


def test_save_load_round_trip(tmp_path, built, feats):
    path = save_index(built, tmp_path / "added.index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["added.index"]  # no temp file left
    loaded = load_index(path, expected_dim=256)
    np.testing.assert_array_equal(
        loaded.reconstruct_n(0, loaded.ntotal), built.reconstruct_n(0, built.ntotal)
    )
    q = feats[:5]
    for a, b in zip(loaded.search(q, 8), built.search(q, 8)):
        np.testing.assert_array_equal(a, b)


def test_blend_rate_zero_is_identity(built):
    fi = FeatureIndex(built)
    x = np.random.default_rng(1).standard_normal((30, 256)).astype(np.float32)
    np.testing.assert_array_equal(fi.blend(x, 0.0), x)


def test_blend_rate_one_returns_indexed_vector(built, feats):
    out = FeatureIndex(built).blend(feats[:50], 1.0)
    np.testing.assert_allclose(out, feats[:50], atol=1e-5)


def test_blend_matches_inverse_distance_formula(built):
    fi = FeatureIndex(built)
    x = np.random.default_rng(2).standard_normal((20, 256)).astype(np.float32)
    d, ix = built.search(x, 8)
    w = (1.0 / d.astype(np.float64)) ** 2
    w /= w.sum(axis=1, keepdims=True)
    retrieved = (fi.big_npy[ix] * w[:, :, None]).sum(axis=1)
    np.testing.assert_allclose(fi.blend(x, 0.3), 0.3 * retrieved + 0.7 * x, rtol=1e-4, atol=1e-5)


def test_wrong_dimension_names_both(tmp_path, built):
    path = save_index(built, tmp_path / "a.index")
    with pytest.raises(RetrievalIndexError) as err:
        load_index(path, expected_dim=768)
    msg = str(err.value)
    assert "256-d" in msg and "768-d" in msg and "(v2)" in msg and "\n" not in msg


def test_missing_unreadable_and_empty_files(tmp_path):
    with pytest.raises(RetrievalIndexError, match="not found"):
        load_index(tmp_path / "nope.index")
    bad = tmp_path / "bad.index"
    bad.write_bytes(b"not an index")
    with pytest.raises(RetrievalIndexError, match="not a readable faiss index") as err:
        load_index(bad)
    assert "\n" not in str(err.value)
    trained = faiss.index_factory(4, "IVF1,Flat")
    trained.train(np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32))
    save_index(trained, tmp_path / "trained.index")
    with pytest.raises(RetrievalIndexError, match="added"):
        load_index(tmp_path / "trained.index")


def test_bad_features_rejected():
    with pytest.raises(RetrievalIndexError):
        build_index(np.zeros((0, 256), np.float32))
    with pytest.raises(RetrievalIndexError):
        build_index(np.full((100, 4), np.nan, np.float32))


def test_features_from_cache(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 256)).astype(np.float16)
    b = rng.standard_normal((5, 256)).astype(np.float16)
    files = [
        write_entry(tmp_path / "a.npz", {"feats": a}),
        write_entry(tmp_path / "b.npz", {"feats": b}),
    ]
    out = features_from_cache(files)
    assert out.dtype == np.float32 and out.shape == (12, 256)
    np.testing.assert_array_equal(out, np.concatenate([a, b]).astype(np.float32))
    with pytest.raises(RetrievalIndexError, match="missing or damaged"):
        features_from_cache([tmp_path / "gone.npz"])
    with pytest.raises(RetrievalIndexError, match="no feature files"):
        features_from_cache([])
