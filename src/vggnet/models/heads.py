"""The heads of a VGG: the paper's classifier (FC-4096, FC-4096, FC-N), the same layers as
convolutions (fully convolutional, Section 3.2), and the global-pooling linear head."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class MinSizePool(nn.Module):
    """Average-pools a map up to at least ``size`` x ``size`` (a no-op for larger maps).

    A map smaller than the 7x7 that fc6 expects is stretched exactly as torchvision's
    ``AdaptiveAvgPool2d((7, 7))`` does, so the fully convolutional head gives the same result
    as the classifier head whenever the map is at most 7x7, and a dense score map beyond.
    """

    def __init__(self, size: int = 7):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h >= self.size and w >= self.size:
            return x
        return F.adaptive_avg_pool2d(x, (max(h, self.size), max(w, self.size)))

    def extra_repr(self) -> str:
        return f"size={self.size}"


class SpatialMean(nn.Module):
    """Averages a class-score map over its spatial positions (the paper's dense evaluation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class Head(nn.Sequential):
    """Base of the heads: an ordered set of named layers; the last one produces the logits."""

    kind = ""
    logits_layer = ""

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for name, layer in self.named_children():
            if name == self.logits_layer:
                if pre_logits:
                    return self.pool_pre_logits(x)
            x = layer(x)
        return x

    def pool_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def last_layer(self) -> nn.Module:
        """The layer that produces the logits (fc8, or fc of the linear head)."""
        return getattr(self, self.logits_layer)


class ClassifierHead(Head):
    """The paper's FC-4096, FC-4096, FC-N after pooling to 7x7 (torchvision's ``classifier``)."""

    kind = "classifier"
    logits_layer = "fc8"

    def __init__(self, in_channels: int, num_classes: int, fc_dim: int = 4096, dropout: float = 0.5):
        super().__init__(OrderedDict([
            ("avgpool", nn.AdaptiveAvgPool2d((7, 7))),
            ("flatten", nn.Flatten(1)),
            ("fc6", nn.Linear(in_channels * 49, fc_dim)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(fc_dim, fc_dim)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(fc_dim, num_classes)),
        ]))


class ConvHead(Head):
    """The same FC layers as 7x7 and 1x1 convolutions: fully convolutional (Section 3.2).

    Returns the spatial average of the class-score map; :meth:`score_map` returns the map.
    """

    kind = "conv"
    logits_layer = "fc8"

    def __init__(self, in_channels: int, num_classes: int, fc_dim: int = 4096, dropout: float = 0.5):
        super().__init__(OrderedDict([
            ("avgpool", MinSizePool(7)),
            ("fc6", nn.Conv2d(in_channels, fc_dim, 7)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Conv2d(fc_dim, fc_dim, 1)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Conv2d(fc_dim, num_classes, 1)),
            ("score_avg", SpatialMean()),
        ]))

    def pool_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """The class-score map (N, classes, H', W') before spatial averaging."""
        for name, layer in self.named_children():
            if name == "score_avg":
                break
            x = layer(x)
        return x


class Scale(nn.Module):
    """Multiplies by a fixed number (airbench's 1/9 on the logits)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class LinearHead(Head):
    """Global average (or max) pooling and one linear layer: the usual head for CIFAR-sized
    inputs. ``logit_scale`` multiplies the logits by a fixed number (1: none)."""

    kind = "linear"
    logits_layer = "fc"

    def __init__(self, in_channels: int, num_classes: int, fc_dim: int = 4096, dropout: float = 0.0,
                 pool: str = "avg", logit_scale: float = 1.0):
        layers = [
            ("avgpool", nn.AdaptiveAvgPool2d(1)) if pool == "avg" else
            ("maxpool", nn.AdaptiveMaxPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("drop", nn.Dropout(dropout)),
            ("fc", nn.Linear(in_channels, num_classes)),
        ]
        if logit_scale != 1.0:
            layers.append(("scale", Scale(logit_scale)))
        super().__init__(OrderedDict(layers))


HEAD_CLASSES = {"classifier": ClassifierHead, "conv": ConvHead, "linear": LinearHead}
