"""A loader over in-memory uint8 tensors: batches are indexed, augmented and normalised as
whole tensors on the target device (no worker processes, no per-image decoding)."""

from __future__ import annotations

import torch

from . import augment
from .datasets import ImageTensors


class TensorLoader:
    def __init__(self, data: ImageTensors, batch_size: int, *, mean, std, train: bool = False,
                 crop_padding: int = 0, flip: bool = False, cutout: int = 0,
                 device: str | torch.device = "cpu", generator: torch.Generator | None = None,
                 drop_last: bool = False, channels_last: bool = False,
                 rank: int = 0, world_size: int = 1, scale: tuple[int, int] | None = None,
                 crop_size: int | None = None, lighting: float = 0.0, shuffle_seed: int = 0,
                 alternate_flip: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)  # uint8: 4x smaller than float
        self.labels = data.labels.to(self.device)
        self.classes = data.classes
        self.batch_size, self.train, self.drop_last = batch_size, train, drop_last
        self.mean, self.std = mean, std
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout
        # alternating flip: which images are flipped in even epochs, drawn once
        self.flip_parity = (augment.alternating_flip_parity(len(self.labels), shuffle_seed)
                            .to(self.device) if alternate_flip else None)
        self.generator = generator or torch.Generator().manual_seed(0)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        # the paper's scale augmentation: shorter side to S in [S_min, S_max], random crop
        self.scale, self.lighting = scale, lighting
        self.crop_size = crop_size or int(self.images.shape[-1])
        # The order of each epoch depends only on (shuffle_seed, epoch), so an interrupted
        # epoch can be replayed from any batch; augmentation draws from `generator`.
        self.shuffle_seed, self.epoch = shuffle_seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + self.epoch)
        return torch.randperm(n, generator=g)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n = len(self.labels)
        if self.drop_last or self.world_size > 1:  # every rank needs a full batch
            return n // self.global_batch
        return -(-n // self.global_batch)

    def __iter__(self):
        return self.batches()

    def batches(self, skip: int = 0):
        """The batches of the current epoch, starting after the first ``skip``."""
        idx = self._indices().to(self.device)
        step = self.global_batch
        for start in range(skip * step, min(len(self) * step, len(idx)), step):
            # with several processes, each takes its own slice of the global batch
            b = idx[start:start + step][self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            x, y = self.images[b], self.labels[b]
            if self.train:
                if self.scale:
                    x = augment.random_scale_crop(x, *self.scale, self.crop_size, self.generator)
                else:
                    x = augment.random_crop(x, self.crop_padding, self.generator)
                if self.flip and self.flip_parity is not None:
                    mask = augment.alternating_flip_mask(self.flip_parity, b, self.epoch)
                    x = augment.flip_where(x, mask)
                elif self.flip:
                    x = augment.random_flip(x, self.generator)
            if self.train and self.lighting:
                x = augment.lighting(x.float().div_(255), self.lighting, self.generator)
            x = augment.normalize(x, self.mean, self.std)
            if self.train and self.cutout:
                x = augment.cutout(x, self.cutout, self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
