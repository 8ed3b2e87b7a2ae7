"""The VGG family: configurations as data, one builder, a registry, weight conversion."""

from .configs import CONFIGS
from .registry import UnknownModelError, create_model, list_models, register_model
from .vgg import PAPER_CONFIG, VGG, make_layers
from .weights import (WeightsError, WeightsMismatchError, detect_format, infer_architecture,
                      load_model, load_weights, read_state_dict, save_weights,
                      to_torchvision_state_dict, to_vggnet_state_dict)
from .summary import summarize, ModelSummary

__all__ = [
    "CONFIGS", "PAPER_CONFIG", "VGG", "make_layers", "create_model", "list_models",
    "register_model", "UnknownModelError", "WeightsError", "WeightsMismatchError",
    "detect_format", "infer_architecture", "load_model", "load_weights", "read_state_dict",
    "save_weights", "to_torchvision_state_dict", "to_vggnet_state_dict", "summarize",
    "ModelSummary",
]
