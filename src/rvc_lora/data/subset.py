"""``data.max_seconds``: a deterministic subset of the training slices, by seed.

The paper table asks "how little audio is enough?", so one voice is trained on 15 s, 30 s, 60 s
and all of its audio. For that comparison to measure the amount of audio and not which sentences
were drawn, the subsets of one seed are nested: every slice of the 15 s subset is in the 30 s one.
That is why the rule is a prefix: the seed fixes one order of all slices, and a budget takes the
longest run from its start that fits. A rule that skipped a slice too long for the rest of the
budget and took later, shorter ones would fill budgets better but would not nest (a larger budget
can take the long slice and then lack room for the short ones the smaller budget took). The cost
is at most one slice's length (3.7 s at most with RVC's slicer) left unused; the seconds actually
used are reported (``data_summary()["seconds"]``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from rvc_lora.data.features_cache import PreparedItem
from rvc_lora.utils.errors import RvcLoraError

FRAMES_PER_SECOND = 100  # PreparedItem.frames


class DataSubsetError(RvcLoraError, ValueError):
    """``data.max_seconds`` cannot select any training audio."""


def seconds(items: Sequence[PreparedItem]) -> float:
    """Summed duration of ``items`` in seconds (integer frames summed first: no float drift)."""
    return sum(i.frames for i in items) / FRAMES_PER_SECOND


def _stable_key(item: PreparedItem) -> tuple:
    # Independent of the order the cache build returned items in (pool or one process).
    return (item.source, item.segment, item.span or (-1, -1), item.item_id)


def subset_order(items: Sequence[PreparedItem], seed: int) -> list[PreparedItem]:
    """All ``items`` in the order the subsets of ``seed`` take them."""
    order = sorted(items, key=_stable_key)
    random.Random(seed).shuffle(order)
    return order


def select_subset(
    items: list[PreparedItem], max_seconds: float | None, seed: int
) -> list[PreparedItem]:
    """The training slices of at most ``max_seconds`` of audio that ``seed`` picks.

    Same ``seed`` -> same slices; for one seed a larger budget keeps every slice of a smaller
    one (nested). The summed ``frames / 100`` of the result never exceeds ``max_seconds``.

    Args:
        items: the training slices (``PreparedItem.frames`` at 100 frames/s).
        max_seconds: the budget in seconds; ``None`` = every item (the list unchanged).
        seed: fixes the order in which slices are taken (``data.subset_seed``).

    Returns:
        The chosen items, in the order of ``items``.

    Raises:
        DataSubsetError: ``max_seconds`` is not positive, or holds no slice.
    """
    if max_seconds is None or not items:
        return list(items)
    if not (
        isinstance(max_seconds, int | float) and math.isfinite(max_seconds) and max_seconds > 0
    ):
        raise DataSubsetError(
            f"data.max_seconds={max_seconds!r}: must be a positive number of seconds of "
            f"training audio, or null for all of it"
        )
    order = subset_order(items, seed)
    chosen: set[int] = set()  # ids of the items: PreparedItem is not hashable
    frames = 0
    for item in order:
        # Compare the sum as a whole: the same arithmetic as seconds() of the result.
        if (frames + item.frames) / FRAMES_PER_SECOND > max_seconds:
            break  # a prefix, so that the subsets of one seed nest (module docstring)
        frames += item.frames
        chosen.add(id(item))
    if not chosen:
        shortest = min(i.frames for i in items) / FRAMES_PER_SECOND
        first = order[0].frames / FRAMES_PER_SECOND
        raise DataSubsetError(
            f"data.max_seconds={max_seconds:g} holds no training slice: the shortest is "
            f"{shortest:.2f} s (subset seed {seed} starts with one of {first:.2f} s); raise "
            f"data.max_seconds or set it to null for all audio"
        )
    return [i for i in items if id(i) in chosen]


def budget_seconds(value: float | str | None) -> float | None:
    """``data.max_seconds`` as a number of seconds, or None for all the audio.

    ``"all"`` means None: it reads better than null in a sweep (``data.max_seconds=15,30,all``)
    and in the run folders named after it.
    """
    if value is None or value == "all":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataSubsetError(
            f"data.max_seconds={value!r}: give seconds of training audio (e.g. 30) or all"
        ) from None
