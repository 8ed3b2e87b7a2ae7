"""Streaming ImageFolder data, for sets too large to hold in memory (ImageNet).

Worker processes decode the images every epoch and apply the paper's per-image scale
augmentation (shorter side to S, S fixed or drawn from [S_min, S_max], a random crop and a
flip); batches reach the device as uint8 tensors, where the colour shift and normalisation
run on the whole batch, as in :class:`~vggnet.data.loader.TensorLoader`, whose interface this
loader shares (``len``, ``set_epoch``, ``batches(skip)``), so the training loop is the same.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import augment
from ..errors import DataError, ImageReadError
from ..io import open_image, resize_shorter_side
from ..models import normalization
from .datasets import TEST_SPLITS, folder_items, split_root
from .sampler import EpochSampler

log = logging.getLogger("vggnet")

# The usual ImageNet statistics: a streamed set is not read twice to measure its own.
IMAGENET_MEAN = list(normalization.IMAGENET_MEAN)
IMAGENET_STD = list(normalization.IMAGENET_STD)


def stream_splits(root: str | Path) -> tuple[Path, Path]:
    """The train/ and val/ (or test/) folders of an ImageFolder tree on disk."""
    root = split_root(Path(root).expanduser())
    if not root.is_dir():
        raise DataError(f"streaming needs a folder with train/ and val/ (or test/) class "
                        f"folders; {root} is not a folder")
    test = next((root / s for s in TEST_SPLITS if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise DataError(f"{root}: streaming needs train/ and val/ (or test/) folders in the "
                        "ImageFolder layout (as ImageNet's are usually arranged)")
    return root / "train", test


class FolderImages(Dataset):
    """The images of one ImageFolder split, each decoded (and augmented) on demand.

    ``train``: shorter side to S (uniform in ``scale``), a random ``crop`` square and a flip;
    otherwise shorter side to ``test_scale`` and the centre crop. With ``crop=None`` and not
    ``train``, the whole image comes back, rescaled to ``test_scale`` if given, else as
    decoded (a JPEG at a reduced scale still at least ``draft``), for the dense and
    multi-scale protocols. Unreadable files give ``None`` (skipped by the loader).
    """

    def __init__(self, root: str | Path, *, train: bool, crop: int | None,
                 scale: tuple[int, int] = (256, 256), test_scale: int | None = 256,
                 flip: bool = True, draft: int | None = None):
        items, self.classes = folder_items(Path(root))
        self.root = Path(root)
        self.paths = [p for p, _, _ in items]
        self.labels = [label for _, label, _ in items]
        self.train, self.crop, self.scale, self.test_scale, self.flip = (
            train, crop, scale, test_scale, flip)
        if crop is not None and not train and test_scale is None:
            raise ValueError("a centre crop needs test_scale")
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        """``item``: an index, or (index, seed) to draw this image's augmentation from its own
        generator, so that the pixels depend on (seed, index) and not on which worker
        process decodes the image or in which order (exact resumes)."""
        from PIL import Image

        if isinstance(item, tuple):
            i, seed = item
            rng = random.Random(seed * 1_000_000_007 + i)
        else:
            i, rng = item, random
        s = rng.randint(*self.scale) if self.train else self.test_scale
        try:
            im = open_image(self.paths[i], draft=s or self.draft)
        except ImageReadError as exc:
            log.warning(f"skipped: {exc}")
            return None
        if s is not None:
            im = resize_shorter_side(im, s)
        if self.crop is not None:
            w, h = im.size
            if self.train:
                left, top = rng.randint(0, w - self.crop), rng.randint(0, h - self.crop)
            else:
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
            im = im.crop((left, top, left + self.crop, top + self.crop))
            if self.train and self.flip and rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        return x, self.labels[i]


def _collate(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.stack([x for x, _ in batch]), torch.tensor([y for _, y in batch])


class StreamLoader:
    """Batches of an ImageFolder split decoded by ``workers`` processes, with the same
    interface and the same per-epoch order (a function of seed and epoch) as TensorLoader."""

    def __init__(self, data: FolderImages, batch_size: int, *, mean, std, train: bool = False,
                 device: str | torch.device = "cpu", lighting: float = 0.0,
                 generator: torch.Generator | None = None, channels_last: bool = False,
                 workers: int = 4, rank: int = 0, world_size: int = 1, shuffle_seed: int = 0,
                 drop_last: bool = True):
        self.sampler = EpochSampler(len(data), batch_size, shuffle=train, seed=shuffle_seed,
                                    rank=rank, world_size=world_size,
                                    drop_last=drop_last and train)
        self.data, self.batch_size, self.train = data, batch_size, train
        self.classes = data.classes
        self.mean, self.std, self.lighting = mean, std, lighting
        self.device = torch.device(device)
        self.generator = generator or torch.Generator().manual_seed(0)
        self.channels_last, self.workers = channels_last, workers

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return self.batches()

    def _rank_batches(self, skip: int) -> list[list]:
        """This rank's batches of the epoch, as (index, seed) items when training: the order
        and every image's augmentation are functions of (shuffle_seed, epoch) alone."""
        seed = self.sampler.epoch_seed
        return [[(i, seed) for i in b.tolist()] if self.train else b.tolist()
                for b in self.sampler.batches(skip)]

    def batches(self, skip: int = 0):
        loader = DataLoader(self.data, batch_sampler=self._rank_batches(skip),
                            num_workers=self.workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        for batch in loader:
            if batch is None:  # a batch of unreadable files only
                continue
            x, y = (t.to(self.device, non_blocking=True) for t in batch)
            if self.train and self.lighting:
                x = augment.lighting(x.float().div_(255), self.lighting, self.generator)
            x = augment.normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
