"""Grad-CAM (Selvaraju et al., 2017) and Grad-CAM++ (Chattopadhyay et al., 2018) on any VGG.

No hooks: the network runs layer by layer up to the chosen layer without autograd, the
activation A there becomes the one tensor that needs a gradient, and only the layers after it
run with autograd, so one forward pass and one backward pass back to that layer make a map.
A tap on a convolution (``conv5_3``) is its output before the ReLU, a tap on ``relu5_3``
after it; the in-place ReLU that follows a tapped convolution is run out of place, so both
are safe (in-place ReLUs break hook-based Grad-CAM on VGG in other tools).

The default layer is the last convolution block's ReLU (``relu5_3`` for VGG-16; ``relu5_4``
for VGG-19), the layer of the Grad-CAM paper, not ``pool5``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

METHODS = ("gradcam", "gradcam++")


@dataclass
class CamResult:
    """One image's class activation map."""

    cam: torch.Tensor          # h x w at the layer's resolution, >= 0, not normalised
    class_index: int
    score: float               # the class's logit
    layer: str
    probability: float         # the class's softmax probability

    def normalized(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """In [0, 1] (min-max, as torchcam), bilinearly resized to ``size`` (H, W) if given."""
        cam = self.cam
        if size is not None:
            cam = F.interpolate(cam[None, None], size=size, mode="bilinear",
                                align_corners=False)[0, 0].clamp_min(0)
        cam = cam - cam.min()
        return cam / (cam.max() + 1e-8)


def default_layer(model: nn.Module) -> str:
    """The last ReLU among the convolutional features (relu5_3 on VGG-16)."""
    names = [n for n, _ in model.features.named_children()]
    relus = [n for n, m in model.features.named_children() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ConfigError(f"{getattr(model, 'arch', 'this model')} has no ReLU among its "
                          f"features ({', '.join(names)}); name a layer")
    return relus[-1]


def check_layer(model: nn.Module, layer: str) -> str:
    """``layer`` if it is one of the model's convolutional feature maps, else a clear error."""
    maps = [n for n, _ in model.features.named_children()]
    if layer not in maps:
        close = difflib.get_close_matches(layer, maps, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown layer {layer!r}{hint}; Grad-CAM takes a feature map of "
                          f"{getattr(model, 'arch', 'the model')}: {', '.join(maps)}")
    return layer


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return list(model.features.named_children()) + list(model.head.named_children())


def grad_cam(model: nn.Module, images: torch.Tensor, layer: str | None = None,
             class_index: int | list[int] | None = None,
             method: str = "gradcam") -> list[CamResult]:
    """Class activation maps of a normalised batch (N x C x H x W) at ``layer`` for
    ``class_index`` (one for all, one per image, or None: each image's top class)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    layer = check_layer(model, layer or default_layer(model))
    if hasattr(model, "check_input"):
        model.check_input(images)
    layers = _layers(model)
    cut = [n for n, _ in layers].index(layer) + 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = images
            for _, module in layers[:cut]:
                x = module(x)
        activation = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x = activation
            for _, module in layers[cut:]:
                x = F.relu(x) if isinstance(module, nn.ReLU) else module(x)
            logits = x
            n = logits.shape[0]
            if class_index is None:
                idx = logits.argmax(1)
            else:
                idx = torch.as_tensor(class_index).expand(n) if isinstance(class_index, int) \
                    else torch.as_tensor(class_index)
            if idx.shape[0] != n or (idx < 0).any() or (idx >= logits.shape[1]).any():
                raise ConfigError(f"class index {class_index} is not one of the model's "
                                  f"{logits.shape[1]} classes (or not one per image)")
            scores = logits.gather(1, idx.view(-1, 1)).squeeze(1)
            (grads,) = torch.autograd.grad(scores.sum(), activation)
    finally:
        model.train(was_training)
    with torch.no_grad():
        weights = _weights(grads, activation.detach(), method)
        cams = F.relu((weights[:, :, None, None] * activation).sum(1))
        probs = logits.detach().float().softmax(1).gather(1, idx.view(-1, 1)).squeeze(1)
    if cams.dtype in (torch.bfloat16, torch.float16):  # computed under autocast
        cams = cams.float()
    return [CamResult(cam=c, class_index=int(i), score=float(s), layer=layer,
                      probability=float(p))
            for c, i, s, p in zip(cams, idx.tolist(), scores.detach(), probs)]


def _weights(grads: torch.Tensor, activation: torch.Tensor, method: str) -> torch.Tensor:
    if method == "gradcam":  # global-average-pooled gradients
        return grads.mean((2, 3))
    # Grad-CAM++ (Eq. 19 of the paper, with exp(score) as its derivation assumes):
    # alpha = g^2 / (2 g^2 + sum_ab A(a, b) g^3), 0 where g = 0; w = sum_ij alpha relu(g)
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + activation.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), 0)
    return (alpha * F.relu(grads)).sum((2, 3))
