"""The order of an epoch and this process's slice of every global batch, for the in-memory
and the streamed loaders alike.

The order depends only on (seed, epoch), so an interrupted epoch can be replayed from any
batch, by any number of worker processes; under torchrun each of ``world_size`` processes
takes its own ``batch_size`` slice of every global batch.
"""

from __future__ import annotations

from typing import Iterator

import torch


class EpochSampler:
    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def epoch_seed(self) -> int:
        """The seed of this epoch's order (and of the streamed images' augmentation)."""
        return self.seed * 1_000_003 + self.epoch

    def __len__(self) -> int:
        if self.drop_last or self.world_size > 1:  # every process needs a full batch
            return self.n // self.global_batch
        return -(-self.n // self.global_batch)

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch_seed))

    def batches(self, skip: int = 0) -> Iterator[torch.Tensor]:
        """This process's indices of each batch of the epoch, after the first ``skip``."""
        order, step = self.order(), self.global_batch
        for start in range(skip * step, min(len(self) * step, self.n), step):
            chunk = order[start:start + step]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
