"""How a fresh layer's weights are drawn: the initialisation schemes a VGG can be built with
(``init=`` of the builders)."""

from __future__ import annotations

import torch.nn as nn


def init_layer(module: nn.Module, scheme: str, is_head: bool) -> None:
    """Initialise one conv or linear layer.

    kaiming: He et al. for convolutions (fan-out, ReLU gain), N(0, 0.01) for the head
             (torchvision's scheme); paper: N(0, 1e-2) everywhere, biases zero (Section 3.1);
    xavier:  Glorot uniform everywhere, biases zero (the paper's footnote alternative);
    dirac:   PyTorch's default, then each convolution's first filters set to the identity, so
             that it starts as an implicit residual (airbench's), biases zero.
    """
    if scheme == "dirac":
        module.reset_parameters()
        if isinstance(module, nn.Conv2d) and not is_head:
            w = module.weight.data
            nn.init.dirac_(w[: w.size(1)])
    elif scheme == "xavier":
        nn.init.xavier_uniform_(module.weight)
    elif scheme == "paper" or is_head:
        nn.init.normal_(module.weight, 0.0, 0.01)
    else:
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)
