"""An inference-optimized copy of a model: batch norm folded into the convolutions,
dropout gone, channels_last memory, optionally ``torch.compile``."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm2d folded into the convolution
    before it; the BN layers become Identity, so layer names and taps are unchanged."""
    model = copy.deepcopy(model).eval()
    features = model.features
    names = [n for n, _ in features.named_children()]
    for i, name in enumerate(names):
        bn = getattr(features, name)
        if not isinstance(bn, nn.BatchNorm2d) or i == 0:
            continue
        before = getattr(features, names[i - 1])
        if isinstance(before, nn.Conv2d):
            conv_name = names[i - 1]
        elif (isinstance(before, nn.MaxPool2d) and i >= 2
              and isinstance(getattr(features, names[i - 2]), nn.Conv2d)
              and bool((bn.weight > 0).all())):
            # pooling before batch norm (vgg_speed): a max commutes with a per-channel
            # increasing affine map, so the BN folds into the convolution all the same
            conv_name = names[i - 2]
        else:
            continue
        setattr(features, conv_name, fuse_conv_bn_eval(getattr(features, conv_name), bn))
        setattr(features, name, nn.Identity())
    return model


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True,
                           compile: bool = False) -> nn.Module:
    """Fold batch norm, drop to eval mode, use channels_last; optionally compile."""
    model = fold_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model
