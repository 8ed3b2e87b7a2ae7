"""A registry of model builders: ``create_model(name, **options)`` and ``list_models()``."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    """An unknown model name; the message lists the valid names and the closest match."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name. A second builder with the same name raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered; choose another name")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter such as ``"*_bn"``."""
    names = sorted(_MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, list_models(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown model {name!r}.{hint} Valid names: {', '.join(list_models())}"


def get_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(unknown_model_message(name)) from None


def create_model(name: str, *, weights=None, strict_head: bool = False, **options) -> nn.Module:
    """Build a registered model by name.

    ``options`` go to the builder (``num_classes``, ``in_channels``, ``width``, ``dropout``,
    ``head``, ``init``, ...). ``weights`` is a path (``.pth``, ``.pt``, ``.safetensors``) or a
    state dict in torchvision's, timm's or vggnet's own format; see :func:`vggnet.models.load_weights`;
    or ``"imagenet"`` for torchvision's published ImageNet weights (downloaded once,
    checksum-verified; see :mod:`vggnet.models.hub`).
    """
    model = get_builder(name)(**options)
    if isinstance(weights, str) and weights.lower() in ("imagenet", "torchvision"):
        from .hub import pretrained_file

        weights = pretrained_file(name)
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights, strict_head=strict_head)
    return model
