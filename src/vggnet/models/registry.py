"""A registry of model builders by name: ``register_model``, ``list_models``, ``get_builder``.

A leaf of the models package: it knows names and builders, nothing about weights (see
:mod:`vggnet.models.factory` for ``create_model``)."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

import torch.nn as nn

from ..errors import ConfigError, UnknownModelError

_MODELS: dict[str, Callable[..., nn.Module]] = {}




def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name. A second builder with the same name raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ConfigError(f"a model named {name!r} is already registered; choose another name")
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
