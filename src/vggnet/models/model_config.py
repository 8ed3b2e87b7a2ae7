"""A model's configuration: one frozen dataclass, validated once, that rebuilds the model.

Checkpoints carry it as a dict (:meth:`ModelConfig.to_dict`). The options of the compact CIFAR
networks (activation, pooling before batch norm, ...) are written only when they differ from
the paper's defaults, so the configs of the paper's models, and the checkpoints that carry
them, read as they always did.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch.nn as nn

from ..errors import ConfigError

HEADS = ("classifier", "conv", "linear")
INITS = ("kaiming", "paper", "xavier", "dirac")
HEAD_POOLS = ("avg", "max")
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}
# Bounds far past any real VGG (the paper's widest layer has 512 channels, fc6 4,096 units),
# so that a typo is an error here and not an overflow or an out-of-memory deep in PyTorch
MAX_WIDTH = 64
MAX_UNITS = 1 << 20
# the fields every checkpoint records; the others only when they are not the default
BASE_FIELDS = ("name", "num_classes", "in_channels", "width", "head", "dropout", "fc_dim", "init")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vgg"
    num_classes: int = 1000
    in_channels: int = 3
    width: float = 1.0                  # multiplies every convolution's channels
    head: str = "classifier"            # classifier, conv (fully convolutional), linear
    dropout: float | None = None        # None: 0.5 for the FC heads (the paper's), 0 for linear
    fc_dim: int = 4096                  # width of fc6 and fc7
    init: str = "kaiming"               # kaiming, paper (N(0, 1e-2)), xavier, dirac
    activation: str = "relu"            # relu, gelu
    pool_before_norm: bool = False      # max-pool straight after the convolution
    bn_momentum: float = 0.1            # PyTorch's convention: weight of the new statistics
    bn_weight: bool = True              # False: batch-norm scales fixed at 1
    head_pool: str = "avg"              # linear head: global avg or max pooling
    logit_scale: float = 1.0            # linear head: logits multiplied by this

    def __post_init__(self):
        self._check()
        if self.dropout is None:
            object.__setattr__(self, "dropout", 0.0 if self.head == "linear" else 0.5)
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "bn_momentum", float(self.bn_momentum))
        object.__setattr__(self, "logit_scale", float(self.logit_scale))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout!r}")

    def _check(self) -> None:
        for what, value, choices in (("head", self.head, HEADS), ("init", self.init, INITS),
                                     ("activation", self.activation, tuple(ACTIVATIONS)),
                                     ("head_pool", self.head_pool, HEAD_POOLS)):
            if value not in choices:
                raise ConfigError(f"{what} must be one of {', '.join(map(repr, choices))}; "
                                  f"got {value!r}")
        if self.head_pool != "avg" and self.head != "linear":
            raise ConfigError(f"head_pool={self.head_pool!r} needs head='linear' (the classifier "
                              "and conv heads pool to 7x7 by averaging, as the paper's do)")
        if self.logit_scale != 1.0 and self.head != "linear":
            raise ConfigError("logit_scale needs head='linear'")
        if not (_is_number(self.logit_scale) and self.logit_scale > 0):
            raise ConfigError(f"logit_scale must be a positive number; got {self.logit_scale!r}")
        if not (_is_number(self.bn_momentum) and 0.0 < self.bn_momentum <= 1.0):
            raise ConfigError(f"bn_momentum must be in (0, 1] (PyTorch's convention: the weight "
                              f"of the new batch's statistics; 0.1 is the default); got "
                              f"{self.bn_momentum!r}")
        for what in ("num_classes", "in_channels", "fc_dim"):
            value = getattr(self, what)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_UNITS:
                raise ConfigError(f"{what} must be an integer from 1 to {MAX_UNITS:,}; "
                                  f"got {value!r}")
        if not (_is_number(self.width) and 0 < self.width <= MAX_WIDTH):
            raise ConfigError(f"width must be a number in (0, {MAX_WIDTH}] (1.0 is the paper's; "
                              f"{MAX_WIDTH} makes 512-channel layers {512 * MAX_WIDTH:,} wide); "
                              f"got {self.width!r}")
        if self.dropout is not None and not _is_number(self.dropout):
            raise ConfigError(f"dropout must be a number in [0, 1); got {self.dropout!r}")

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in BASE_FIELDS or value != f.default:
                out[f.name] = value
        return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
