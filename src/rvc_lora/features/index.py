"""RVC's retrieval index (RVC_FACTS.md §9.1) and the feature blend it feeds (§9.2 step 8).

The index is a faiss ``IVF{n},Flat`` (squared L2) over a speaker's training content features
(50 fps, 256-d for v1 models, 768-d for v2). At inference every content frame is replaced, in
part (``index_rate``), by an inverse-distance-weighted mean of its 8 nearest training frames,
which pulls the source speaker's features towards the target speaker's.

Files are plain ``faiss.write_index`` output, so RVC's ``added_IVF*_Flat_nprobe_1_*.index``
files load here and ours load in RVC.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from rvc_lora.features.index_file import IndexLayoutError, check_index_file
from rvc_lora.utils.atomic import atomic_path
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)

KMEANS_ABOVE = 200_000  # RVC reduces the training set to k-means centres above this many rows
KMEANS_CENTRES = 10_000
ADD_BATCH = 8192
SEARCH_K = 8
_MIN_DIST = 1e-12  # floor for a squared distance of 0 (a frame that is in the index)
_VERSION_OF_DIM = {256: "v1", 768: "v2"}


class RetrievalIndexError(RvcLoraError, ValueError):
    """A retrieval index is missing, unreadable, empty, or does not fit the model."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise RetrievalIndexError(
            "the retrieval index needs faiss: pip install faiss-cpu"
        ) from None
    return faiss


def n_ivf(n_rows: int) -> int:
    """RVC's IVF list count: ``max(1, min(int(16 * sqrt(N)), N // 39))``."""
    return max(1, min(int(16 * math.sqrt(n_rows)), n_rows // 39))


def _kmeans_centres(x: np.ndarray, seed: int) -> np.ndarray:
    """Reduce ``x`` to :data:`KMEANS_CENTRES` cluster centres, as RVC does for large sets."""
    try:
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        # RVC uses sklearn; faiss' k-means gives centres of the same kind, not the same values.
        log.warning("scikit-learn is not installed: reducing features with faiss.Kmeans instead")
        km = _faiss().Kmeans(x.shape[1], KMEANS_CENTRES, niter=20, seed=seed)
        km.train(x)
        return np.ascontiguousarray(km.centroids, dtype=np.float32)
    km = MiniBatchKMeans(
        n_clusters=KMEANS_CENTRES,
        batch_size=256 * (os.cpu_count() or 1),
        compute_labels=False,
        init="random",
        random_state=seed,
    ).fit(x)
    return np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)


def build_index(features: np.ndarray, *, seed: int = 0):
    """Build RVC's retrieval index from content features.

    Rows are shuffled; above 200k rows they are replaced by 10k MiniBatchKMeans centres
    (faiss.Kmeans if scikit-learn is missing). Then ``IVF{n},Flat`` with
    ``n = max(1, min(int(16 sqrt(N)), N // 39))``, nprobe 1, trained on all rows, and the rows
    added in batches of 8192 (the "added" index that inference needs).

    Args:
        features: ``[N, D]`` float content features (all frames of all training clips).
        seed: shuffling and k-means seed.
    Returns:
        A trained, filled ``faiss.Index`` with ``ntotal`` rows (N, or 10000 after reduction).
    Raises:
        RetrievalIndexError: not 2-D, empty, or not finite.
    """
    faiss = _faiss()
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RetrievalIndexError(
            f"build_index expects features [N, D] with N, D > 0, got shape {list(x.shape)}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise RetrievalIndexError("build_index: features contain NaN or Inf; re-extract them")
    x = x[np.random.default_rng(seed).permutation(len(x))]
    if len(x) > KMEANS_ABOVE:
        x = _kmeans_centres(x, seed)
    n = n_ivf(len(x))
    index = faiss.index_factory(x.shape[1], f"IVF{n},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(x)
    for start in range(0, len(x), ADD_BATCH):
        index.add(x[start : start + ADD_BATCH])
    return index


def save_index(index, path: str | os.PathLike[str]) -> Path:
    """``faiss.write_index`` to a temp file next to ``path``, then rename; returns ``path``."""
    faiss = _faiss()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path)


def _dim_message(path: object, have: int, want: int) -> str:
    version = _VERSION_OF_DIM.get(want)
    uses = f"{want}-d features" + (f" ({version})" if version else "")
    return (
        f"{path}: index has {have}-d vectors, the model uses {uses}: "
        f"build the index from this model's features"
    )


def check_dim(index, expected_dim: int, source: object = "index") -> None:
    """Raise :class:`RetrievalIndexError` unless ``index.d == expected_dim``."""
    if int(index.d) != int(expected_dim):
        raise RetrievalIndexError(_dim_message(source, int(index.d), int(expected_dim)))


def load_index(path: str | os.PathLike[str], expected_dim: int | None = None):
    """Read a faiss index file (ours or RVC's ``added_*.index``).

    The layout is checked before faiss reads the file (:mod:`rvc_lora.features.index_file`):
    faiss would allocate whatever sizes a damaged file claims.

    Raises:
        RetrievalIndexError: missing or unreadable file, not an intact ``IVF{n},Flat`` index, an
            index with no vectors (RVC's ``trained_*`` file), or a vector width other than
            ``expected_dim``.
    """
    faiss = _faiss()
    p = Path(path)
    if not p.is_file():
        raise RetrievalIndexError(f"{p}: index file not found; build it with build_index")
    try:
        check_index_file(p)
    except IndexLayoutError as exc:
        raise RetrievalIndexError(
            f"{p}: not a readable faiss index ({exc}); rebuild it with build_index or use "
            f"RVC's added_IVF*_Flat_*.index"
        ) from None
    except OSError as exc:
        raise RetrievalIndexError(f"{p}: cannot read the index ({exc.strerror})") from None
    try:
        index = faiss.read_index(str(p))
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a C++ trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetrievalIndexError(f"{p}: not a readable faiss index ({first})") from None
    if index.ntotal == 0:
        raise RetrievalIndexError(
            f"{p}: index holds no vectors (RVC's trained_* file?); use the added_* index"
        )
    if expected_dim is not None:
        check_dim(index, expected_dim, p)
    return index


class FeatureIndex:
    """A loaded retrieval index plus its vectors (RVC's ``big_npy``) for the blend.

    Args:
        index: a filled faiss index.
    """

    def __init__(self, index) -> None:
        if index.ntotal == 0:
            raise RetrievalIndexError("index holds no vectors; use the added_* index")
        self.index = index
        self.big_npy = index.reconstruct_n(0, index.ntotal)  # [ntotal, D] float32

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_dim: int | None = None) -> FeatureIndex:
        """:func:`load_index` wrapped in a :class:`FeatureIndex`."""
        return cls(load_index(path, expected_dim))

    @property
    def dim(self) -> int:
        """Vector width D."""
        return int(self.index.d)

    def blend(self, feats: np.ndarray, rate: float) -> np.ndarray:
        """Mix each frame with the inverse-distance mean of its 8 nearest index vectors.

        Weights are ``(1 / s)^2`` of faiss' squared-L2 distances s (so ∝ 1/‖x−y‖⁴), normalised
        per frame; missing neighbours (faiss id -1, possible with nprobe 1) get weight 0.

        Args:
            feats: ``[T, D]`` float32 content features.
            rate: 0 returns ``feats`` unchanged; 1 returns the retrieved features.
        Returns:
            ``[T, D]`` float32, ``rate * retrieved + (1 - rate) * feats``.
        """
        x = np.ascontiguousarray(feats, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RetrievalIndexError(
                f"blend expects feats [T, {self.dim}], got shape {list(x.shape)}"
            )
        if rate == 0 or len(x) == 0:
            return x.copy()
        dist, ix = self.index.search(x, SEARCH_K)  # [T, k] each
        found = ix >= 0
        w = np.square(1.0 / np.maximum(dist, _MIN_DIST), dtype=np.float32) * found
        w /= np.maximum(w.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
        retrieved = np.sum(self.big_npy[np.where(found, ix, 0)] * w[:, :, None], axis=1)
        return (rate * retrieved + (1 - rate) * x).astype(np.float32, copy=False)
