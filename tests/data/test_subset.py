"""``data.max_seconds``: the same slices for the same seed, never over the budget, nested."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rvc_lora.data.features_cache import PreparedItem
from rvc_lora.data.subset import DataSubsetError, seconds, select_subset
from rvc_lora.utils.errors import RvcLoraError


def _items(n: int = 40, seed: int = 0) -> list[PreparedItem]:
    """``n`` slices of 0.50-3.70 s from a few files, in the order a cache build returns them."""
    rng = random.Random(seed)
    items = []
    for k in range(n):
        frames = rng.randint(50, 370)
        source, chunk = f"take {k // 4}.wav", k % 4
        span = (chunk * 59200, chunk * 59200 + frames * 160)
        items.append(
            PreparedItem(f"h{k // 4}-p-{chunk:04d}", source, Path("s"), Path("f"), frames, span)
        )
    return items


def _ids(items: list[PreparedItem]) -> list[str]:
    return [i.item_id for i in items]


def test_same_seed_same_slices_whatever_the_input_order() -> None:
    items = _items()
    shuffled = items[::-1]
    a = select_subset(items, 20.0, seed=3)
    b = select_subset(shuffled, 20.0, seed=3)
    assert sorted(_ids(a)) == sorted(_ids(b)) and _ids(a) == _ids(select_subset(items, 20.0, 3))
    # In the order given (the cache's): the training sampler's order follows from it.
    assert _ids(a) == [i.item_id for i in items if i.item_id in set(_ids(a))]


def test_different_seeds_pick_different_slices() -> None:
    items = _items()  # 40 slices, ~85 s: 10 s leaves many choices
    picks = {tuple(_ids(select_subset(items, 10.0, seed))) for seed in range(5)}
    assert len(picks) == 5


def test_never_over_budget_and_nested_as_it_grows() -> None:
    items = _items()
    total = seconds(items)
    for seed in range(6):
        previous: set[str] = set()
        for budget in [3.7, 4.0, 7.5, 15.0, 15.01, 30.0, 45.5, 60.0, total - 0.01, total]:
            chosen = select_subset(items, budget, seed)
            assert 0 < seconds(chosen) <= budget
            assert set(_ids(chosen)) >= previous, (seed, budget)
            previous = set(_ids(chosen))
        assert len(previous) == len(items)  # the whole total takes everything


def test_the_budget_sum_is_exact_at_the_boundary() -> None:
    # 0.29 * 100 is 28.999999999999996: a frames-vs-budget*100 comparison would drop the slice.
    items = [PreparedItem("a-p-0000", "a.wav", Path("s"), Path("f"), 29, (0, 4640))]
    assert len(select_subset(items, 0.29, seed=0)) == 1
    assert seconds(select_subset(items, 0.29, seed=0)) <= 0.29


def test_none_returns_every_item_unchanged() -> None:
    items = _items()
    assert select_subset(items, None, seed=7) == items


@pytest.mark.parametrize("budget", [0.0, -5.0, float("nan"), float("inf")])
def test_non_positive_budget_is_a_one_line_error(budget) -> None:
    with pytest.raises(DataSubsetError, match=r"data.max_seconds=.*must be a positive") as err:
        select_subset(_items(), budget, seed=0)
    assert isinstance(err.value, RvcLoraError) and "\n" not in str(err.value)


def test_budget_shorter_than_every_slice_names_the_shortest() -> None:
    items = _items()
    shortest = min(i.frames for i in items) / 100
    with pytest.raises(DataSubsetError) as err:
        select_subset(items, shortest - 0.01, seed=0)
    text = str(err.value)
    assert f"the shortest is {shortest:.2f} s" in text and "raise data.max_seconds" in text
    assert isinstance(err.value, ValueError) and "\n" not in text


def test_budget_reads_seconds_and_all() -> None:
    from rvc_lora.data.subset import budget_seconds

    assert budget_seconds("all") is None and budget_seconds(None) is None
    assert budget_seconds(15) == 15.0 and budget_seconds("7.5") == 7.5
    with pytest.raises(DataSubsetError, match=r"data.max_seconds='lots': give seconds .* or all"):
        budget_seconds("lots")
