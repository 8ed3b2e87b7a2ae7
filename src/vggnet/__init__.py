"""vggnet: the VGG family of Simonyan & Zisserman (2014) in PyTorch.

The names below come from :mod:`vggnet.models` on first use (PEP 562), so that ``import
vggnet`` alone, and the ``vggnet`` command's ``--help``, ``--version`` and usage errors, do not
wait for PyTorch to load."""

from typing import TYPE_CHECKING

from .version import __version__

_FROM_MODELS = ("VGG", "UnknownModelError", "WeightsError", "WeightsMismatchError",
                "create_model", "list_models", "load_model", "load_weights", "save_weights",
                "summarize", "to_torchvision_state_dict")

__all__ = [*_FROM_MODELS, "__version__"]

if TYPE_CHECKING:  # what editors and type checkers see
    from .models import (VGG, UnknownModelError, WeightsError, WeightsMismatchError,
                         create_model, list_models, load_model, load_weights, save_weights,
                         summarize, to_torchvision_state_dict)


def __getattr__(name: str):
    if name in _FROM_MODELS:
        from . import models

        value = getattr(models, name)
        globals()[name] = value  # once: later lookups are ordinary attributes
        return value
    raise AttributeError(f"module 'vggnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_MODELS})
