"""A loader over in-memory uint8 tensors: batches are indexed, augmented and normalised as
whole tensors on the target device (no worker processes, no per-image decoding)."""

from __future__ import annotations

import torch

from . import augment
from .datasets import ImageTensors
from .sampler import EpochSampler


class TensorLoader:
    def __init__(self, data: ImageTensors, batch_size: int, *, mean, std, train: bool = False,
                 crop_padding: int = 0, flip: bool = False, cutout: int = 0,
                 device: str | torch.device = "cpu", generator: torch.Generator | None = None,
                 drop_last: bool = False, channels_last: bool = False,
                 rank: int = 0, world_size: int = 1, scale: tuple[int, int] | None = None,
                 crop_size: int | None = None, lighting: float = 0.0, shuffle_seed: int = 0,
                 alternate_flip: bool = False, sizes=None):
        self.sampler = EpochSampler(len(data), batch_size, shuffle=train, seed=shuffle_seed,
                                    rank=rank, world_size=world_size, drop_last=drop_last)
        self.device = torch.device(device)
        self.images = data.images.to(self.device)  # uint8: 4x smaller than float
        self.labels = data.labels.to(self.device)
        self.classes = data.classes
        self.batch_size, self.train = batch_size, train
        self.mean, self.std = mean, std
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout
        # alternating flip: which images are flipped in even epochs, drawn once
        self.flip_parity = (augment.alternating_flip_parity(len(self.labels), shuffle_seed)
                            .to(self.device) if alternate_flip else None)
        self.generator = generator or torch.Generator().manual_seed(0)
        self.channels_last = channels_last
        # the paper's scale augmentation: shorter side to S in [S_min, S_max], random crop
        self.scale, self.lighting = scale, lighting
        self.crop_size = crop_size or int(self.images.shape[-1])
        # progressive resizing: epoch -> (crop, scale range), or None for a fixed size
        self.sizes = sizes
        # the order of each epoch is the sampler's (a function of seed and epoch, so an
        # interrupted epoch can be replayed from any batch); augmentation draws from `generator`

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        if self.sizes is not None and self.train:
            self.crop_size, self.scale = self.sizes(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return self.batches()

    def batches(self, skip: int = 0):
        """The batches of the current epoch, starting after the first ``skip``."""
        for b in self.sampler.batches(skip):
            b = b.to(self.device)
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
