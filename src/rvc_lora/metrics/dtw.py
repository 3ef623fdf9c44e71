"""Dynamic time warping: the alignment MCD and F0 metrics use for utterances of any length."""

from __future__ import annotations

import numpy as np


def pairwise_euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the frames of ``x`` ``[N, D]`` and ``y`` ``[M, D]`` -> ``[N, M]``."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected frames [N, D] and [M, D], got {list(x.shape)}, {list(y.shape)}")
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.maximum(sq, 0.0))


def dtw(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimal-cost monotone alignment through a local cost matrix.

    Steps (1, 0), (0, 1) and (1, 1), each adding the cost of the cell it enters (no diagonal
    weight), from (0, 0) to (N-1, M-1). O(NM) time and memory; each row is vectorised.

    Args:
        cost: ``[N, M]`` non-negative local costs.
    Returns:
        ``(total, path)``: the summed cost along the best path and the path ``[L, 2]`` of
        ``(i, j)`` index pairs, both indices non-decreasing, ``max(N, M) <= L <= N + M - 1``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(
            f"dtw: cost must be a non-empty [N, M] matrix, got shape {list(cost.shape)}"
        )
    n, m = cost.shape
    acc = np.empty((n, m))
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        # Entering (i, j) from above or the diagonal needs only the previous row:
        from_prev = cost[i] + np.minimum(acc[i - 1], np.concatenate(([np.inf], acc[i - 1, :-1])))
        # Then horizontal runs: acc[i, j] = min_k<=j (from_prev[k] + cost[i, k+1..j]), which is a
        # running minimum of from_prev - cumsum, shifted back by the cumsum.
        run = np.cumsum(cost[i])
        acc[i] = run + np.minimum.accumulate(from_prev - run)
    return float(acc[-1, -1]), _backtrack(acc)


def _backtrack(acc: np.ndarray) -> np.ndarray:
    i, j = acc.shape[0] - 1, acc.shape[1] - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            # Prefer the diagonal on ties, so identical inputs give the identity path.
            step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        path.append((i, j))
    return np.asarray(path[::-1], dtype=np.int64)


def dtw_align(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """DTW path ``[L, 2]`` between frame sequences ``x`` ``[N, D]`` and ``y`` ``[M, D]``."""
    return dtw(pairwise_euclidean(x, y))[1]
