"""vggnet: the VGG family of Simonyan & Zisserman (2014) in PyTorch."""

from .version import __version__

from .models import (VGG, UnknownModelError, WeightsError, WeightsMismatchError, create_model,
                     list_models, load_model, load_weights, save_weights, summarize,
                     to_torchvision_state_dict)

__all__ = ["VGG", "UnknownModelError", "WeightsError", "WeightsMismatchError", "create_model",
           "list_models", "load_model", "load_weights", "save_weights", "summarize",
           "to_torchvision_state_dict", "__version__"]
