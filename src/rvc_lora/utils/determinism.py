"""Randomness that survives a restart: per-step RNG seeds and a resumable training order.

A run killed mid-epoch and resumed from ``last.ckpt`` in a new process must draw the same noise
and see the same batches as an uninterrupted run. Lightning checkpoints hold no RNG states, and a
plain ``DataLoader`` restarts the epoch. So every random draw of training is a pure function of
the run's seed and a counter that the checkpoint restores:

* model noise (posterior sample, NSF noise, segment starts): the global RNGs are reseeded from
  ``(seed, global_step)`` at the start of every training step (:func:`seed_step`);
* batch order: a permutation of ``(seed, epoch)`` (:class:`EpochSampler`);
* random crops: a function of ``(seed, epoch, index)``, computed from the :class:`ItemKey` the
  sampler hands to the dataset, in whichever process (DataLoader worker) loads the item;
* position in the epoch: :class:`ResumableLoader` counts the batches it handed out; Lightning
  (>= 2.3) stores ``state_dict()`` of stateful train loaders in every checkpoint and calls
  ``load_state_dict`` before the first batch of a resumed fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler

from rvc_lora.utils.errors import CheckpointError

_SEED_SPACE = 2**63  # torch.manual_seed takes up to 2**64 - 1; stay well inside


def step_seed(seed: int, step: int) -> int:
    """Seed of the global RNGs for optimisation step ``step`` of a run seeded with ``seed``.

    Every step gets its own seed (torch's generator turns neighbouring seeds into unrelated
    streams); the prime multiplier exceeds the step count of any realistic run, so two
    ``(seed, step)`` pairs do not share a seed.
    """
    return (int(seed) * 1_000_003 + int(step)) % _SEED_SPACE


def seed_step(seed: int, step: int) -> None:
    """Reseed torch's CPU and CUDA generators for step ``step`` (see :func:`step_seed`)."""
    torch.manual_seed(step_seed(seed, step))


class ItemKey(NamedTuple):
    """What :class:`EpochSampler` yields: the dataset index and the epoch it is drawn in."""

    index: int
    epoch: int


class EpochSampler(DistributedSampler):
    """Item order as a pure function of ``(seed, epoch)``, able to start part-way into an epoch.

    Lightning calls :meth:`set_epoch` at the start of every epoch. ``len`` is always the whole
    epoch (this rank's share), also on a pass that :meth:`start_at` shortens, so Lightning's
    batch counts agree with an uninterrupted run.

    A ``DistributedSampler`` so that Lightning leaves it in place under DDP instead of wrapping
    it in its own, which would hide the epoch from the crops. Like torch's, each of
    ``num_replicas`` ranks takes every ``num_replicas``-th item of the order, padded by
    repetition to equal shares.

    Args:
        num_items: dataset size.
        seed: run seed; the same seed gives the same order in every epoch and every process.
        shuffle: False keeps dataset order (still yields :class:`ItemKey`).
        num_replicas, rank: DDP world size and this process's rank.
    """

    def __init__(
        self, num_items: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        # Explicit replicas and rank: torch's constructor then needs no process group.
        super().__init__(range(num_items), num_replicas, rank, shuffle, int(seed), drop_last=False)
        self.num_items = int(num_items)
        self._start: tuple[int, int] | None = None  # (epoch, first position) of the next pass

    def order(self, epoch: int) -> list[int]:
        """Dataset indices this rank draws in ``epoch``, in order."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(step_seed(self.seed, epoch))
            indices = torch.randperm(self.num_items, generator=gen).tolist()
        else:
            indices = list(range(self.num_items))
        if indices and len(indices) < self.total_size:
            indices = (indices * math.ceil(self.total_size / len(indices)))[: self.total_size]
        return indices[self.rank : self.total_size : self.num_replicas]

    def start_at(self, epoch: int, position: int) -> None:
        """Let the next pass over ``epoch`` begin at item ``position`` of its order.

        A pass over another epoch ignores it (and drops it): the skip belongs to one epoch.
        """
        self._start = (int(epoch), int(position))

    def __iter__(self) -> Iterator[ItemKey]:
        epoch, start = self.epoch, 0
        if self._start is not None:
            start = self._start[1] if self._start[0] == epoch else 0
            self._start = None
        for index in self.order(epoch)[start:]:
            yield ItemKey(index, epoch)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose position in the epoch is checkpointed.

    ``state_dict()`` is ``{"epoch", "batches", "num_items", "num_replicas", "batch_size",
    "seed"}``: the epoch of the current pass and how many of its batches were handed out (the
    same on every DDP rank; Lightning saves rank 0's). After ``load_state_dict`` the next pass
    over that epoch skips those batches (without loading them); a pass over another epoch (the
    checkpoint was taken after the last batch of its epoch) starts from the top.

    Iteration is lazy: the sampler's order is read at the first batch, after Lightning's
    ``set_epoch``, also with worker processes that prefetch as soon as their iterator exists.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, sampler: Any = None, **kwargs: Any):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._epoch, self._batches = 0, 0  # the current pass
        self._resume: dict[str, int] | None = None

    def _identity(self, sampler: EpochSampler) -> dict[str, int]:
        # What fixes the order: a position is meaningless under other values.
        return {
            "num_items": sampler.num_items,
            "num_replicas": sampler.num_replicas,
            "batch_size": int(self.batch_size or 1),
            "seed": sampler.seed,
        }

    def _epoch_sampler(self) -> EpochSampler | None:
        return self.sampler if isinstance(self.sampler, EpochSampler) else None

    def __iter__(self) -> Iterator[Any]:
        sampler = self._epoch_sampler()
        epoch = sampler.epoch if sampler is not None else 0
        skip = 0
        if self._resume is not None and sampler is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches"]
            sampler.start_at(epoch, skip * (self.batch_size or 1))
        self._resume = None
        self._epoch, self._batches = epoch, skip
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self._epoch_sampler()
        if sampler is None:  # e.g. Lightning swapped in a sequential sampler (overfit_batches)
            return {}
        if self._resume is not None:  # loaded, not iterated yet: still the same position
            return dict(self._resume)
        return {"epoch": self._epoch, "batches": self._batches, **self._identity(sampler)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self._epoch_sampler()
        if not state or sampler is None:
            return
        mine = self._identity(sampler)
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise CheckpointError(
                f"the checkpoint stopped mid-epoch with other training data ({theirs}) than this "
                f"run has ({mine}); resume with the same recordings, data.batch_size, seed and devices"
            )
        self._resume = {**mine, "epoch": int(state["epoch"]), "batches": int(state["batches"])}
