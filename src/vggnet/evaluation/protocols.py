"""The paper's test protocols (Section 3.2), on batches of image tensors.

* ``single``: a centre crop of the network's input size from the image rescaled to Q;
* ``dense``: the fully convolutional net applied to the whole image rescaled to Q, its
  class-score map averaged (FC layers as convolutions, the exact same weights);
* ``multicrop``: a grid x grid of crops (5 x 5 in the paper) per scale;
* ``dense+multicrop``: the average of the two.

Every protocol takes several scales Q and optional horizontal flips; the softmax outputs of
all views are averaged. Images are rescaled isotropically (shorter side to Q).
"""

from __future__ import annotations

import contextlib
import copy

import torch

from ..data.augment import normalize, resize_shorter
from ..errors import ConfigError, DataError
from .metrics import tta_probs

PROTOCOLS = ("single", "dense", "multicrop", "dense+multicrop")


def rescale(x: torch.Tensor, q: int) -> torch.Tensor:
    """Isotropic rescale of images so that the shorter side is ``q`` (bilinear, antialiased
    when shrinking): the same resize as the training scale augmentation."""
    return resize_shorter(x, q)


def grid_positions(length: int, crop: int, grid: int) -> list[int]:
    """``grid`` evenly spaced crop offsets along one side (repeats where the side is short)."""
    if grid == 1:
        return [(length - crop) // 2]
    return [round(i * (length - crop) / (grid - 1)) for i in range(grid)]


def dense_model(model):
    """A copy of ``model`` whose FC layers are convolutions (a no-op for conv/linear heads)."""
    if getattr(model, "head_kind", None) == "classifier":
        model = copy.deepcopy(model).set_head("conv")
    return model


def _softmax(model, x, flip: bool) -> torch.Tensor:
    p = model(x).float().softmax(1)
    if flip:
        p = p + model(x.flip(3)).float().softmax(1)
    return p


def protocol_probs(model, x: torch.Tensor, protocol: str, scales, crop: int, *, flip=False,
                   grid: int = 5, dense=None, shift: int = 0) -> torch.Tensor:
    """Averaged class probabilities of float images ``x`` (N x C x H x W, normalised).
    ``shift`` (single protocol only) adds the centre crop's copies translated by +-shift
    pixels, the test-time augmentation of the fast-CIFAR recipes."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if shift < 0 or (shift and protocol != "single"):
        raise ConfigError(f"a test-time shift (here {shift}) is for the single protocol, "
                         f"0 or more pixels; got protocol {protocol!r}")
    dense = dense if dense is not None else (
        dense_model(model) if "dense" in protocol else None)
    total, views = 0.0, 0
    for q in scales:
        xq = rescale(x, q)
        h, w = xq.shape[-2:]
        if h < crop or w < crop:
            raise ConfigError(f"scale {q} is smaller than the crop size {crop}; use scales >= {crop}")
        if protocol == "single":
            top, left = (h - crop) // 2, (w - crop) // 2
            n = (2 if flip else 1) * (3 if shift else 1)
            total = total + n * tta_probs(model, xq[..., top:top + crop, left:left + crop],
                                          flip=flip, shift=shift)
            views += n
        if "dense" in protocol:
            total = total + _softmax(dense, xq, flip)
            views += 2 if flip else 1
        if "multicrop" in protocol:
            crops = [xq[..., t:t + crop, l:l + crop]
                     for t in grid_positions(h, crop, grid) for l in grid_positions(w, crop, grid)]
            n = x.shape[0]
            batch = torch.cat(crops)  # all crops of the batch in one forward
            p = _softmax(model, batch, flip).reshape(len(crops), n, -1).sum(0)
            # dense and multi-crop are weighted equally in the combination, as in the paper
            weight = 1.0 if protocol == "multicrop" else 1.0 / len(crops)
            total = total + p * weight
            views += (2 if flip else 1) * (len(crops) if protocol == "multicrop" else 1)
    return total / views


@torch.inference_mode()
def evaluate_protocol(model, images: torch.Tensor, labels: torch.Tensor, *, protocol="single",
                      scales=None, crop: int | None = None, flip=False, grid=5, mean, std,
                      batch_size=200, device="cpu", autocast=contextlib.nullcontext, shift=0):
    """Top-1/top-5 (and more, see :func:`classification_metrics`) of ``model`` on uint8
    ``images`` under a protocol of the paper."""
    from .metrics import classification_metrics

    device = torch.device(device)
    crop = crop or images.shape[-1]
    scales = list(scales or [crop])
    model.eval()
    dense = dense_model(model) if "dense" in protocol else None
    outs = []
    for start in range(0, len(images), batch_size):
        # normalising commutes with rescaling (both are linear, the weights sum to one)
        x = normalize(images[start:start + batch_size].to(device), mean, std)
        with autocast():
            p = protocol_probs(model, x, protocol, scales, crop, flip=flip, grid=grid,
                               dense=dense, shift=shift)
        outs.append(p.clamp_min(1e-12).log())
    log_probs = torch.cat(outs)
    return classification_metrics(log_probs, labels.to(log_probs.device), model.num_classes)


@torch.inference_mode()
def evaluate_protocol_folder(model, folder, *, protocol="single", scales, crop: int, flip=False,
                             grid=5, mean, std, device="cpu", autocast=contextlib.nullcontext,
                             workers: int = 4, limit: int | None = None, shift: int = 0):
    """:func:`evaluate_protocol` on an ImageFolder split read from disk image by image (e.g.
    ImageNet's validation set), each image whole at its own aspect ratio, as in the paper.

    Worker processes decode each image (a JPEG at a reduced scale that is still at least the
    largest Q, which is much faster for photographs); the protocol rescales it to every Q.
    """
    from torch.utils.data import DataLoader, Subset

    from ..data.stream import FolderImages
    from .metrics import classification_metrics

    device = torch.device(device)
    scales = list(scales)
    data = FolderImages(folder, train=False, crop=None, test_scale=None, draft=max(scales))
    classes = data.classes
    if limit:
        data = Subset(data, torch.linspace(0, len(data) - 1, limit).round().long().tolist())
    model.eval()
    dense = dense_model(model) if "dense" in protocol else None
    outs, labels = [], []
    loader = DataLoader(data, batch_size=None, num_workers=workers)
    for item in loader:
        if item is None:  # unreadable file: skipped with a warning by FolderImages
            continue
        x, y = item
        x = normalize(x[None].to(device), mean, std)
        with autocast():
            p = protocol_probs(model, x, protocol, scales, crop, flip=flip, grid=grid, dense=dense,
                               shift=shift)
        outs.append(p.clamp_min(1e-12).log())
        labels.append(int(y))
    if not outs:
        raise DataError(f"{folder}: no readable images to evaluate")
    result = classification_metrics(torch.cat(outs), torch.tensor(labels, device=device),
                                    model.num_classes)
    result["classes"] = classes
    return result
