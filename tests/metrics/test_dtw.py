"""DTW: known optimal cost on hand-made matrices, path shape, brute force on small ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rvc_lora.metrics.dtw import dtw, dtw_align, pairwise_euclidean


def _check_path(path: np.ndarray, n: int, m: int) -> None:
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    steps = np.diff(path, axis=0)
    allowed = {(1, 0), (0, 1), (1, 1)}
    assert {tuple(s) for s in steps} <= allowed


def test_hand_made_matrix() -> None:
    cost = np.array(
        [
            [1, 3, 3],
            [2, 1, 4],
            [5, 2, 1],
            [6, 5, 1],
        ],
        dtype=float,
    )
    total, path = dtw(cost)
    assert total == 4.0
    assert path.tolist() == [[0, 0], [1, 1], [2, 2], [3, 2]]


def test_horizontal_and_vertical_runs() -> None:
    # The cheap cells form an L: right along row 0, then down the last column.
    cost = np.full((4, 5), 10.0)
    cost[0, :] = 1.0
    cost[:, 4] = 1.0
    total, path = dtw(cost)
    # Four cells along row 0, a diagonal step that skips the corner, three down column 4.
    assert total == 7.0
    _check_path(path, 4, 5)
    assert path.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [2, 4], [3, 4]]


def _all_paths(n: int, m: int):
    def walk(i: int, j: int, acc: list[tuple[int, int]]):
        if (i, j) == (n - 1, m - 1):
            yield acc
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                yield from walk(i + di, j + dj, acc + [(i + di, j + dj)])

    yield from walk(0, 0, [(0, 0)])


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 5), (5, 4)])
def test_matches_brute_force(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        cost = rng.random(shape)
        best = min(sum(cost[i, j] for i, j in p) for p in _all_paths(*shape))
        total, path = dtw(cost)
        assert total == pytest.approx(best, abs=1e-12)
        _check_path(path, *shape)
        assert sum(cost[i, j] for i, j in path) == pytest.approx(best, abs=1e-12)


def test_identical_sequences_give_the_diagonal() -> None:
    x = np.random.default_rng(0).standard_normal((30, 4))
    assert dtw_align(x, x).tolist() == [[i, i] for i in range(30)]


def test_repeated_frames_are_absorbed() -> None:
    x = np.random.default_rng(1).standard_normal((20, 3))
    stretched = np.repeat(x, [1, 2, 3, 1] * 5, axis=0)  # 35 frames, each a copy of one in x
    total, path = dtw(pairwise_euclidean(x, stretched))
    assert total == pytest.approx(0.0, abs=1e-6)
    _check_path(path, 20, 35)
    assert len(path) == 35


def test_pairwise_euclidean() -> None:
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y = np.array([[0.0, 0.0], [6.0, 8.0], [3.0, 4.0]])
    np.testing.assert_allclose(pairwise_euclidean(x, y), [[0, 10, 5], [5, 5, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="frames"):
        pairwise_euclidean(x, y[:, :1])


def test_bad_cost_matrix() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        dtw(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        dtw(np.zeros(3))


def test_brute_force_enumerates_every_path() -> None:
    # Delannoy numbers: the check above is only as good as the enumeration.
    assert sum(1 for _ in _all_paths(3, 3)) == 13
    assert sum(1 for _ in _all_paths(4, 5)) == 129
    assert list(itertools.islice(_all_paths(1, 1), 2)) == [[(0, 0)]]
