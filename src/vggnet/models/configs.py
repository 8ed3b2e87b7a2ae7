"""The paper's Table 1 as data.

Each configuration is a list of layer tokens, read left to right:

* ``64``      a 3x3 convolution (stride 1, padding 1) with 64 output channels, then ReLU
* ``(256, 1)`` a 1x1 convolution with 256 output channels (configuration C), then ReLU
* ``"LRN"``   local response normalisation (configuration A-LRN)
* ``"M"``     2x2 max pooling with stride 2, which closes a block
* ``"W"``     a 2x2 patch-whitening convolution (configuration S): 2 x 4 x C filters whose
  weights are computed from training images (:meth:`vggnet.models.VGG.init_whitening`) and
  not trained, then the activation

A new variant is one entry here and one line in :mod:`vggnet.models.vgg`.
"""

from __future__ import annotations

from typing import Union

Token = Union[int, tuple, str]

# Table 1 of Simonyan & Zisserman (2014): "ConvNet configurations (shown in columns)".
CONFIGS: dict[str, list[Token]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M",
          512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    # Not in the paper: the compact VGG that holds the CIFAR-10 speed record, airbench94's
    # network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"): a whitening
    # layer, then three blocks of two 3x3 convolutions, each block pooling after its first.
    "S": ["W", 64, "M", 64, 256, "M", 256, 256, "M", 256],
}

# Local response normalisation of A-LRN, with the parameters of Krizhevsky et al. (2012)
# that the paper reuses: size n=5, alpha=1e-4, beta=0.75, k=2.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def conv_spec(token: Token) -> tuple[int, int] | None:
    """(out_channels, kernel_size) of a convolution token, or None for other tokens."""
    if isinstance(token, bool):
        raise TypeError(f"invalid layer token {token!r}")
    if isinstance(token, int):
        return token, 3
    if isinstance(token, tuple):
        channels, kernel = token
        return int(channels), int(kernel)
    return None
