"""Augmentation on whole batches of tensors (CPU or GPU): no per-image Python work.

All functions take uint8 or float tensors N x C x H x W and a ``torch.Generator`` so that a
run is reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, high: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=g, device=g.device).to(device)


def crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image crops of ``size`` x ``size`` at offsets (top[i], left[i]), in one gather."""
    n = x.shape[0]
    rows = (top[:, None] + torch.arange(size, device=x.device))[:, :, None]  # N x S x 1
    cols = (left[:, None] + torch.arange(size, device=x.device))[:, None, :]  # N x 1 x S
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_crop_to(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of each image."""
    n, _, h, w = x.shape
    return crop_at(x, _rand(n, h - size + 1, g, x.device), _rand(n, w - size + 1, g, x.device), size)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``padding`` and take a random crop of the original size per image."""
    if padding <= 0:
        return x
    padded = F.pad(x.float() if x.dtype == torch.uint8 else x, (padding,) * 4, mode="reflect")
    return random_crop_to(padded.to(x.dtype), x.shape[-1], g)


def resize_shorter(x: torch.Tensor, s: int) -> torch.Tensor:
    """Isotropic resize so that the shorter side is ``s`` (uint8 in, uint8 out)."""
    h, w = x.shape[-2:]
    if min(h, w) == s:
        return x
    f = s / min(h, w)
    size = (max(s, round(h * f)), max(s, round(w * f)))
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=f < 1)
    return y.round_().clamp_(0, 255).to(x.dtype) if x.dtype == torch.uint8 else y


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop of each image (odd margins: one more pixel at the
    bottom and right, as torchvision's CenterCrop and :func:`vggnet.io.resize_center_crop`)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"a {size} px crop of {h} x {w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def random_scale_crop(x: torch.Tensor, s_min: int, s_max: int, crop: int,
                      g: torch.Generator) -> torch.Tensor:
    """The paper's training scale (Section 3.1): rescale each image so its shorter side is S,
    S drawn per image from [s_min, s_max] (fixed S when equal), then a random crop."""
    n = x.shape[0]
    scales = _rand(n, s_max - s_min + 1, g, "cpu") + s_min
    out = torch.empty(n, x.shape[1], crop, crop, dtype=x.dtype, device=x.device)
    for s in scales.unique().tolist():  # images that share a scale are resized together
        idx = torch.nonzero(scales == s).flatten().to(x.device)
        out[idx] = random_crop_to(resize_shorter(x[idx], s), crop, g)
    return out


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the images."""
    return flip_where(x, _rand(x.shape[0], 2, g, x.device).bool())


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the images where ``mask`` (N booleans) is true."""
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def alternating_flip_parity(n: int, seed: int) -> torch.Tensor:
    """Alternating flip (Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024): which of ``n``
    images are flipped in even epochs (a random half); the others are flipped in odd ones, so
    that every image is seen both ways in every two epochs instead of by chance."""
    return torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 7_919)).bool()


def alternating_flip_mask(parity: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """The flips of the images ``indices`` in ``epoch``, from :func:`alternating_flip_parity`."""
    return parity.to(indices.device)[indices] ^ bool(epoch % 2)


def cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square (clipped at the border) at a random centre per image."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = _rand(n, h, g, x.device)[:, None, None]
    cx = _rand(n, w, g, x.device)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    y0, x0 = cy - size // 2, cx - size // 2
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x.masked_fill(inside[:, None], 0)


def lighting(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    """AlexNet's PCA colour shift: add alpha * eigval * eigvec with alpha ~ N(0, std) per image.

    ``x`` is float in [0, 1]; the eigen-decomposition is ImageNet's RGB covariance.
    """
    if std <= 0:
        return x
    eigval = torch.tensor([0.2175, 0.0188, 0.0045], device=x.device)
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]], device=x.device)
    alpha = torch.randn(x.shape[0], 3, generator=g, device=g.device).to(x.device) * std
    shift = (eigvec @ (alpha * eigval).T).T  # N x 3
    return x + shift[:, :, None, None].to(x.dtype)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images to zero-mean, unit-std float."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - mean) / std
