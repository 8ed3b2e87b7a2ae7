"""The VGG family: configurations as data, one builder, a registry, weight conversion, and a
factory on top (``create_model``, ``load_model``, ``init_from_shallower``)."""

from ..errors import UnknownModelError, WeightsError, WeightsMismatchError
from .configs import CONFIGS
from .factory import (LoadReport, create_model, infer_architecture, init_from_shallower,
                      load_model, load_weights)
from .model_config import ModelConfig
from .registry import list_models, register_model
from .summary import ModelSummary, summarize
from .vgg import PAPER_CONFIG, VGG, make_layers
from .weights import (detect_format, read_state_dict, save_weights, to_torchvision_state_dict,
                      to_vggnet_state_dict)

__all__ = [
    "CONFIGS", "PAPER_CONFIG", "VGG", "ModelConfig", "make_layers", "create_model", "list_models",
    "register_model", "UnknownModelError", "WeightsError", "WeightsMismatchError",
    "LoadReport", "detect_format", "infer_architecture", "init_from_shallower", "load_model", "load_weights",
    "read_state_dict", "save_weights", "to_torchvision_state_dict", "to_vggnet_state_dict",
    "summarize", "ModelSummary",
]
