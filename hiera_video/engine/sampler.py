"""Resumable, distributed sampling: the epoch / position bookkeeping that makes resumes exact.

:class:`ResumableSampler` yields dataset indices:

* the order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so it can be regenerated
  after a restart and skipped forward to the batch where the run stopped (:meth:`ResumableSampler.set_start`);
* with ``world_size`` ranks, global position ``p`` goes to rank ``p % world_size``: a global batch of
  ``B * world_size`` holds exactly the samples a single process would see with batch ``B * world_size``.

Per-sample randomness (clip starts, crops, RandAugment, erasing, replacement of broken videos) is not the
sampler's business: the data layer's datasets seed it from ``(seed, epoch, index)``
(:func:`hiera_video.data.datasets.sample_seed`; the loop calls ``dataset.set_epoch``), so augmentations depend
on neither the number of DataLoader workers nor the point where a run was resumed. Repeated augmentation
happens inside the dataset too (K clips per decoded video), never by repeating indices here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]

_MASK = (1 << 63) - 1


def _epoch_order_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation (SplitMix64-style mixing: nearby epochs, unrelated orders)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 - 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) & 0xFFFFFFFF


class ResumableSampler(Sampler[int]):
    """Epoch-seeded, rank-sharded sampler that can start in the middle of an epoch.

    Args:
        num_samples: ``len(dataset)``.
        shuffle: random permutation per epoch (training) or dataset order (evaluation).
        seed: base seed shared by all ranks.
        rank, world_size: this process's share: global positions ``rank, rank + world_size, ...``.
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
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(_epoch_order_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self._order().tolist()
        total = self.per_rank() * self.world_size if self.drop_last else self.num_samples
        positions = range(self.rank, total, self.world_size)
        for pos in positions[self.start :]:
            yield order[pos]

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)
