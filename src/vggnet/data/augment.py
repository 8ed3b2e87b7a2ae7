"""Augmentation on whole batches of tensors (CPU or GPU): no per-image Python work.

All functions take uint8 or float tensors N x C x H x W and a ``torch.Generator`` so that a
run is reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, high: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=g, device=g.device).to(device)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``padding`` and take a random crop of the original size per image."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x.float() if x.dtype == torch.uint8 else x, (padding,) * 4, mode="reflect")
    padded = padded.to(x.dtype)
    dy = _rand(n, 2 * padding + 1, g, x.device)
    dx = _rand(n, 2 * padding + 1, g, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # N x H x 1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # N x 1 x W
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the images."""
    flip = _rand(x.shape[0], 2, g, x.device).bool()
    return torch.where(flip[:, None, None, None], x.flip(3), x)


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
