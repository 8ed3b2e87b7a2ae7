"""Where and in which precision to compute: a leaf of the package."""

from __future__ import annotations

import contextlib
from functools import partial

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(spec: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or a torch device string."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but no CUDA GPU is available; "
                          "use --device cpu or auto")
    return device


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 when asked, or by default on a GPU."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16 when asked (or auto on a GPU), else a no-op. The
    one precision path: every forward runs under it, in fp32 as a no-op."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
