"""Resumable, distributed, seeded sampling: the piece that makes runs reproducible and resumes exact.

:class:`ResumableSampler` yields ``(dataset_index, sample_seed)`` pairs:

* the order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so it can be regenerated
  after a restart and skipped forward to the batch where the run stopped (:meth:`ResumableSampler.set_start`);
* with ``world_size`` ranks, global position ``p`` goes to rank ``p % world_size``: a global batch of
  ``B * world_size`` holds exactly the samples a single process would see with batch ``B * world_size``;
* repeated augmentation (DeiT / MAE-ST) repeats each index ``repeats`` times in a row, so the copies land on
  different ranks with different augmentations; an epoch keeps ``len(dataset)`` draws;
* ``sample_seed`` is a function of ``(seed, epoch, global position)``. :class:`SeededDataset` seeds python,
  numpy and torch with it around each ``dataset[index]`` call, so augmentations depend on neither the
  number of DataLoader workers nor the point where a run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableSampler", "SeededDataset", "sample_seed"]

_MASK = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one draw; distinct for every (seed, epoch, position) in practice."""
    # SplitMix64-style mixing so nearby positions give unrelated seeds.
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Epoch-seeded, rank-sharded sampler that can start in the middle of an epoch.

    Args:
        num_samples: ``len(dataset)``.
        shuffle: random permutation per epoch (training) or dataset order (evaluation).
        seed: base seed shared by all ranks.
        rank, world_size: this process's share: global positions ``rank, rank + world_size, ...``.
        repeats: repeated augmentation factor (1: off).
        drop_last: drop the tail so every rank gets the same number of samples (training). Without it,
            evaluation shards are uneven but every sample is seen exactly once.
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        repeats: int = 1,
        drop_last: bool = True,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.repeats = max(1, repeats)
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the current epoch (resume)."""
        self.start = start

    def per_rank(self) -> int:
        """Samples this rank draws in a full epoch."""
        if self.drop_last:
            return self.num_samples // self.world_size
        return len(range(self.rank, self.num_samples, self.world_size))

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1) & 0xFFFFFFFF)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[: self.num_samples]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order().tolist()
        total = self.per_rank() * self.world_size if self.drop_last else self.num_samples
        positions = range(self.rank, total, self.world_size)
        for pos in positions[self.start :]:
            yield order[pos], sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)


class SeededDataset(Dataset):
    """Calls ``dataset[index]`` with python, numpy and torch seeded from the sample seed.

    Global generator states of the calling process are restored afterwards, so loading in the main
    process (``num_workers=0``) does not disturb the training loop's random stream either.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            torch.manual_seed(seed)
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)

    def __getattr__(self, name: str) -> Any:
        # Expose the wrapped dataset's attributes (classes, paths ...) to callers.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
