"""Building models: by name, with weights, from a checkpoint file, from a shallower net.

The top of the models package: it puts the registry (names and builders), the weight
conversion (:mod:`vggnet.models.weights`) and the published weights (:mod:`vggnet.models.hub`)
together.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import WeightsMismatchError, WeightsError
from .hub import PRETRAINED_NAMES, pretrained_file
from .registry import get_builder
from .weights import (fits_message, detect_format, infer_architecture, load_weights,
                      read_metadata, read_state_dict, to_vggnet_state_dict)


def create_model(name: str, *, weights=None, strict_head: bool = False, **options) -> nn.Module:
    """Build a registered model by name.

    ``options`` go to the builder (``num_classes``, ``in_channels``, ``width``, ``dropout``,
    ``head``, ``init``, ...). ``weights`` is a path (``.pth``, ``.pt``, ``.safetensors``) or a
    state dict in torchvision's, timm's or vggnet's own format (see
    :func:`vggnet.models.weights.load_weights`), or ``"imagenet"`` for torchvision's published
    ImageNet weights (downloaded once, checksum-verified; see :mod:`vggnet.models.hub`).
    """
    model = get_builder(name)(**options)
    if isinstance(weights, str) and weights.lower() in PRETRAINED_NAMES:
        weights = pretrained_file(name)
    if weights is not None:
        load_weights(model, weights, strict_head=strict_head)
    return model


def load_model(path, **overrides):
    """Build a model from a vggnet ``.safetensors`` file alone (its config is in the file)."""
    meta = read_metadata(path)
    if "model_config" not in meta:
        raise WeightsError(f"{path} carries no vggnet model config; build the model with "
                           "create_model(name, weights=path) instead")
    config = dict(meta["model_config"])
    config.update(overrides)
    name = config.pop("name")
    return create_model(name, weights=path, strict_head="num_classes" not in overrides, **config)


def init_from_shallower(model, source) -> list[str]:
    """Initialise ``model`` from a trained (usually shallower) net, layer by paper name.

    The paper trained net A first and initialised the deeper nets' first four convolutional
    layers and the three fully connected layers from it (Section 3.1). Layers are matched by
    name (``conv3_2`` of A is ``conv3_2`` of D), so exactly those layers, and any other of the
    same name and shape, are copied; the rest keep their initialisation. Returns the copied
    layer names.
    """
    raw = read_state_dict(source)
    fmt = detect_format(raw)
    if fmt != "vggnet":
        arch = infer_architecture(raw)
        if arch is None:
            raise WeightsMismatchError(f"{source}: {fits_message(raw)}, so its layers cannot be "
                                       "named; give a vggnet checkpoint")
        with torch.device("meta"):
            donor = create_model(arch.split(" ")[0], width=model.model_config["width"])
        raw = to_vggnet_state_dict(raw, donor, fmt)
    target = model.state_dict()
    copied, state = [], {}
    for key, value in raw.items():
        if key not in target:
            continue
        if value.shape != target[key].shape:
            if key.startswith("head.") and value.numel() == target[key].numel():
                value = value.reshape(target[key].shape)
            else:
                continue
        state[key] = value
        layer = key.split(".")[1]
        if layer not in copied:
            copied.append(layer)
    if not state:
        raise WeightsMismatchError(f"{source}: no layer matches {model.arch} by name and shape")
    model.load_state_dict(state, strict=False)
    return copied
