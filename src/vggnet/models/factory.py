"""Models from weights: matching weights to architectures, loading them, and building models
by name, with weights, from a checkpoint file, or from a shallower net.

The top of the models package: it puts the registry (names and builders), the weight
conversion (:mod:`vggnet.models.weights`) and the published weights (:mod:`vggnet.models.hub`)
together.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import WeightsMismatchError, WeightsError
from .hub import is_published, pretrained_file, published_model
from ..formats.keras import is_keras_file
from .normalization import CAFFE, InputNorm
from .registry import get_builder, list_models
from .weights import (feature_names, detect_format, read_metadata, read_state_dict,
                      to_vggnet_state_dict)

log = logging.getLogger("vggnet")


@dataclass
class LoadReport:
    format: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


# --- matching -----------------------------------------------------------------------------

def infer_architecture(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The registered model (with width, if not 1) whose convolutional layers these fit."""
    try:
        fmt = detect_format(sd)
    except WeightsError:
        return None
    def shapes(state):  # the step counters are not part of the architecture (old files lack them)
        return {k: tuple(v.shape) for k, v in state.items()
                if k.startswith("features.") and not k.endswith(".num_batches_tracked")}
    got = shapes(sd)
    convs = [(k, v) for k, v in sd.items() if k.startswith("features.") and v.ndim == 4
             and k.endswith(".weight")]
    if not convs:
        return None
    ordered = [v for _, v in sorted(convs, key=lambda kv: _layer_order(kv[0]))]
    first = ordered[0]  # reads the image: its input channels are the model's
    # the width from the first 3x3 convolution (a whitening layer, vgg_speed's, comes before)
    width = next(v for v in ordered if tuple(v.shape[-2:]) == (3, 3)).shape[0] / 64
    for name in list_models():
        with torch.device("meta"):
            candidate = get_builder(name)(width=width, in_channels=first.shape[1],
                                     head="linear", num_classes=1)
        feats = {k: v for k, v in candidate.state_dict().items() if k.startswith("features.")}
        if fmt != "vggnet":
            index = {n: i for i, n in enumerate(feature_names(candidate))}
            feats = {f"features.{index[k.split('.')[1]]}.{k.split('.', 2)[2]}": v
                     for k, v in feats.items()}
        if shapes(feats) == got:
            return name if width == 1 else f"{name} (width {width:g})"
    return None


def _layer_order(key: str):
    part = key.split(".")[1]
    if part == "whiten":  # vgg_speed's whitening layer, before conv1_1
        return (0, 0)
    if part.isdigit():
        return (int(part), 0)
    m = re.match(r"[a-z]+(\d+)_(\d+)", part)
    return (int(m.group(1)), int(m.group(2))) if m else (10**9, 0)


def fits_message(sd) -> str:
    arch = infer_architecture(sd)
    return f"these weights fit {arch}" if arch else "these weights fit no registered VGG"


def load_weights(model, source, *, strict_head: bool = False) -> LoadReport:
    """Load weights of any supported format into ``model``.

    The convolutional layers must match exactly, or :class:`WeightsMismatchError` names the
    first offending keys and the architecture the weights fit. The head is loaded when it
    matches; otherwise (another number of classes, another head type) the backbone is loaded
    and the unmatched head layers keep their fresh initialisation, with a message saying so.
    ``strict_head=True`` turns that case into an error too.
    """
    raw = read_state_dict(source)
    fmt = detect_format(raw)
    sd = to_vggnet_state_dict(raw, model, fmt)
    target = model.state_dict()
    report = LoadReport(format="keras" if is_keras_file(source) else fmt)

    # Fully connected weights load into convolutions and back by a reshape of the same numbers.
    for key, value in list(sd.items()):
        if key.startswith("head.") and key in target and value.shape != target[key].shape \
                and value.numel() == target[key].numel():
            sd[key] = value.reshape(target[key].shape)

    # Files saved before PyTorch 0.4.1 have no batch-norm step counters; PyTorch's own
    # load_state_dict starts them at 0, and so does this
    for key in target:
        if key.endswith(".num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=torch.long)
    _check_backbone(model, sd, target, raw)
    head_target = {k: v for k, v in target.items() if k.startswith("head.")}
    head_given = {k: v for k, v in sd.items() if k.startswith("head.")}
    logits = f"head.{model.head.logits_layer}."
    fitting = {k: v for k, v in head_given.items()
               if k in head_target and v.shape == head_target[k].shape}
    unmatched = sorted(set(head_target) - set(fitting))
    extra = sorted(set(head_given) - set(fitting))
    if unmatched and strict_head:
        raise WeightsMismatchError(
            f"the head of the weights does not fit {model.arch} with head={model.head_kind!r} "
            f"and num_classes={model.num_classes}: {unmatched[:3]} do not match")
    if unmatched:
        if all(k.startswith(logits) for k in unmatched) and \
                all(k.startswith(logits) for k in extra) and extra:
            given = head_given[f"{logits}weight"].shape[0]
            msg = (f"{logits}* re-initialised for {model.num_classes} classes (the weights "
                   f"have {given}); the rest of the network was loaded")
        else:
            msg = (f"the head ({model.head_kind!r}) was initialised afresh: the weights' head "
                   f"does not fit it ({', '.join(unmatched[:2])}...); the convolutional "
                   "layers were loaded")
        report.messages.append(msg)
        log.warning(msg)
        report.reinitialised = unmatched
    state = {k: v for k, v in sd.items() if k.startswith("features.")}
    state.update(fitting)
    model.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    if report.format == "keras":  # Keras' VGG weights take its "caffe" inputs
        model.input_norm = CAFFE
        report.messages.append("Keras weights: the model expects BGR in 0-255 minus the "
                               "ImageNet mean, no std (model.input_norm, the 'caffe' preset)")
    return report


def _check_backbone(model, sd: dict, target: dict, raw: dict) -> None:
    """The convolutional layers must match exactly; the error names the first offenders and
    the architecture the weights fit."""
    problems = []
    for key in target:
        if key.startswith("features.") and key not in sd:
            problems.append(f"{key} is missing from the weights")
    for key, value in sd.items():
        if not key.startswith("features."):
            continue
        if key not in target:
            problems.append(f"unexpected key {key}")
        elif value.shape != target[key].shape:
            problems.append(f"{key} has shape {tuple(value.shape)} in the weights but "
                            f"{tuple(target[key].shape)} in the model")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise WeightsMismatchError(
            f"the weights do not fit {model.arch} (width {model.model_config['width']:g}): "
            + "; ".join(problems[:3]) + f"{more}. {fits_message(raw)}.")


# --- building ------------------------------------------------------------------------------


def create_model(name: str, *, weights=None, strict_head: bool = False, **options) -> nn.Module:
    """Build a registered model by name.

    ``options`` go to the builder (``num_classes``, ``in_channels``, ``width``, ``dropout``,
    ``head``, ``init``, ...). ``weights`` is a path (``.pth``, ``.pt``, ``.safetensors``) or a
    state dict in torchvision's, timm's or vggnet's own format (see
    :func:`vggnet.models.weights.load_weights`), or ``"imagenet"`` (or timm's name for the
    same file, ``"vgg16_bn.tv_in1k"``) for torchvision's published ImageNet weights
    (downloaded once, checksum-verified; see :mod:`vggnet.models.hub`).
    """
    if is_published(weights):
        weights = pretrained_file(published_model(weights, name))
    if weights is None:
        return get_builder(name)(**options)
    # Built without initialisation (about 1 s of random numbers for a VGG-16 that the weights
    # then overwrite); only what the weights leave unset is initialised afterwards.
    with torch.device("meta"):
        model = get_builder(name)(**options)
    model.to_empty(device="cpu")
    report = load_weights(model, weights, strict_head=strict_head)
    _init_unloaded(model, set(report.loaded))
    return model


def _init_unloaded(model, loaded: set[str]) -> None:
    """Initialise the layers of an uninitialised model whose tensors are not in ``loaded``,
    keeping the loaded tensors of those layers."""
    state = model.state_dict()
    missing = [k for k in state if k not in loaded]
    if not missing:
        return
    owners = {k.rpartition(".")[0] for k in missing}  # the layers that hold them
    keep = {k: v.clone() for k, v in state.items()
            if k in loaded and k.rpartition(".")[0] in owners}
    owners = {model.get_submodule(name) for name in owners}
    known = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    if all(isinstance(m, known) for m in owners):
        model.reset_parameters(only=owners)
    else:  # a layer kind reset_parameters does not know: initialise everything, then reload
        keep = {k: v.clone() for k, v in state.items() if k in loaded}
        model.reset_parameters()
    model.load_state_dict(keep, strict=False)


def load_model(path, **overrides):
    """Build a model from a vggnet ``.safetensors`` file alone (its config is in the file)."""
    meta = read_metadata(path)
    if "model_config" not in meta:
        raise WeightsError(f"{path} carries no vggnet model config; build the model with "
                           "create_model(name, weights=path) instead")
    config = dict(meta["model_config"])
    config.update(overrides)
    name = config.pop("name")
    model = create_model(name, weights=path, strict_head="num_classes" not in overrides, **config)
    if isinstance(meta.get("input_norm"), dict):
        norm = meta["input_norm"]
        model.input_norm = InputNorm(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in norm.items()})
    return model


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
