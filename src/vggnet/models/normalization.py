"""What a backbone expects of its input: pixel range, channel order, mean and std.

Weights are only right with the preprocessing they were trained with. torchvision's (and
timm's) ImageNet weights take RGB in [0, 1] normalised by ImageNet's mean and std; the original
Caffe VGG weights (used by many style-transfer codes) take BGR in [0, 255] minus a mean; a
vggnet run takes its own data set's mean and std. Every model carries one :class:`InputNorm`
(``model.input_norm``) and every feature use applies it to RGB images in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputNorm:
    """``(x * max_value - mean) / std`` on channels in ``channel_order``, for RGB ``x`` in
    [0, 1]; mean and std are in units of the ``[0, max_value]`` range, in that order."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    max_value: float = 1.0
    channel_order: str = "RGB"

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} and std {self.std} must be the same length, "
                              "std positive")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """RGB images in [0, 1] (N x C x H x W) -> the backbone's input."""
        if self.channel_order == "BGR":
            x = x.flip(1)
        if self.max_value != 1.0:
            x = x * self.max_value
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return asdict(self)


TORCHVISION = InputNorm()
CAFFE = InputNorm(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), max_value=255.0,
                  channel_order="BGR")
PRESETS = {"torchvision": TORCHVISION, "imagenet": TORCHVISION, "caffe": CAFFE}


def rgb_equivalent(norm: InputNorm) -> InputNorm:
    """The same arithmetic as ``norm`` in RGB order and [0, 1] units, for a first layer whose
    input channels are put in RGB order (:func:`take_rgb_input`)."""
    order = slice(None, None, -1) if norm.channel_order == "BGR" else slice(None)
    return InputNorm(mean=tuple(m / norm.max_value for m in norm.mean[order]),
                     std=tuple(s / norm.max_value for s in norm.std[order]))


def take_rgb_input(model) -> bool:
    """A model whose weights read BGR in [0, 255] (Keras', Caffe's): reorder its first
    convolution's input channels so that it reads RGB, and express its ``input_norm`` as
    :func:`rgb_equivalent`; its outputs on the same images are unchanged (up to rounding).
    The form a training pipeline, which normalises RGB images in [0, 1], can feed. False if
    there was nothing to do."""
    norm = getattr(model, "input_norm", None)
    if norm is None or (norm.channel_order == "RGB" and norm.max_value == 1.0):
        return False
    if norm.channel_order == "BGR":
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        with torch.no_grad():
            first.weight.copy_(first.weight.flip(1))
    model.input_norm = rgb_equivalent(norm)
    return True


def input_norm_of(model) -> InputNorm:
    """The model's own :class:`InputNorm` (torchvision's ImageNet one when it names none)."""
    return getattr(model, "input_norm", None) or TORCHVISION


def input_norm(spec: str | InputNorm | None, model=None) -> InputNorm:
    """A preset name ("torchvision", "caffe"), an :class:`InputNorm`, or None for the model's."""
    if isinstance(spec, InputNorm):
        return spec
    if spec is None:
        return input_norm_of(model)
    if spec not in PRESETS:
        raise ConfigError(f"unknown input normalisation {spec!r}: {', '.join(PRESETS)}")
    return PRESETS[spec]
