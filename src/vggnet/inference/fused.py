"""A VGG as a fused, prepacked program for CPU inference (the PyTorch backend's fast path).

Eager PyTorch runs a VGG layer by layer: each convolution reorders its weights into oneDNN's
blocked layout on every call, then a separate ReLU and a max-pooling that also computes
indices each read and write the whole activation again. For inference all of that is fixed,
so this module does once what eager mode does per call:

* every convolution's and linear layer's weights are reordered into oneDNN's layout once
  (``mkldnn_reorder_conv2d_weight``, ``_reorder_linear_weight``, as ``torch.compile``'s
  freezing pass does; a convolution's once per input shape, since oneDNN's blocking of the
  weights depends on it), and a ReLU that follows one is fused into it (a oneDNN post-op);
* 2x2 max-pooling with stride 2 is two element-wise maxima over strided views of the
  channels-last map (row pairs, then column pairs), without the indices that ``max_pool2d``
  computes for a backward pass inference never takes;
* identities (where batch norm was folded) are dropped, so a batch-norm model's ReLUs fuse
  too; every other layer (LRN, dropout, the heads' pooling) runs as the module it is.

The engine (:class:`vggnet.inference.engine.InferenceEngine`) checks the program against the
eager module once at every input shape (each has its own reordered weights) and replaces it
by the module, with a warning, if the two disagree or an operation is missing from this build of PyTorch, so the
fast path can never change an answer.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


def _mkldnn_ops_available() -> bool:
    mk = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and mk is not None
            and hasattr(mk, "_convolution_pointwise") and hasattr(mk, "_linear_pointwise")
            and hasattr(mk, "_reorder_linear_weight")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


class _Conv:
    """A convolution (with its ReLU fused) whose weights are reordered into oneDNN's layout for
    the input shape it runs on. oneDNN picks the weights' blocking per problem: on an AVX2 CPU
    VGG-16's middle layers want 24 output channels per block at batch 1 and 16 at batch 32, so
    weights reordered once for no shape in particular were reordered again inside every call
    for most layers. The reordered weights of the last :attr:`KEEP` input shapes are kept."""

    KEEP = 4

    def __init__(self, conv: nn.Conv2d, relu: bool, per_shape: bool = True):
        self.dense = conv.weight.detach()
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.attr = "relu" if relu else "none"
        self.per_shape = per_shape
        self.packed: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        if not per_shape:
            self._weight(None)

    def _weight(self, shape):
        with self.lock:
            w = self.packed.get(shape)
            if w is None:
                w = torch._C._nn.mkldnn_reorder_conv2d_weight(
                    self.dense.to_mkldnn(), *self.args, None if shape is None else list(shape))
                self.packed[shape] = w
                if len(self.packed) > self.KEEP:
                    self.packed.popitem(last=False)  # the least recently used shape
            else:
                self.packed.move_to_end(shape)
            return w

    def __call__(self, x):
        w = self._weight(tuple(x.shape) if self.per_shape else None)
        return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, *self.args, self.attr,
                                                       [], "")


class _Linear:
    def __init__(self, linear: nn.Linear, relu: bool):
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.attr = "relu" if relu else "none"

    def __call__(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], "")


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling with stride 2 (odd rows and columns dropped, as ``max_pool2d``), as two
    element-wise maxima: of row pairs, then of column pairs in the half-height result. In a
    channels-last map each row is one contiguous run of W*C values, so the first pass, over
    the whole input, reads whole runs; the four quarter-views of the earlier version (one
    maximum of all four) read every other C-run and wrote three quarter-size tensors: 0.62x
    its time for VGG-16's five bf16 pools at batch 32 on a 2-core Xeon, 0.95x at batch 1
    (``python benchmarks/max_pool.py``, benchmarks/RESULTS.md; PyTorch's ``max_pool2d``, which
    also computes indices, 0.76x at batch 32)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    rows = x[..., :h, :w].unflatten(-2, (h // 2, 2))  # (..., H/2, 2, W): a view
    half = torch.maximum(rows[..., 0, :], rows[..., 1, :]).unflatten(-1, (w // 2, 2))
    return torch.maximum(half[..., 0], half[..., 1])


def _is_plain_2x2_pool(m: nn.Module) -> bool:
    def two(v):
        return v in (2, (2, 2))
    return (isinstance(m, nn.MaxPool2d) and two(m.kernel_size) and two(m.stride)
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.ceil_mode
            and not m.return_indices)


def _compile(layers: list[nn.Module], per_shape: bool = True) -> list:
    """A list of callables doing what the sequence of ``layers`` does. Identities (where
    batch norm was folded into the convolution before it) are left out first, so that the
    ReLU after a folded batch norm is fused into the convolution as on plain models."""
    layers = [m for m in layers if not isinstance(m, nn.Identity)]
    steps, i = [], 0
    while i < len(layers):
        m = layers[i]
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
            steps.append(_Conv(m, relu, per_shape))
        elif isinstance(m, nn.Linear):
            steps.append(_Linear(m, relu))
        else:
            steps.append(max_pool_2x2 if _is_plain_2x2_pool(m) else m)
            relu = False
        i += 2 if relu else 1
    return steps


class FusedProgram:
    """``model``'s features and head (both sequences of layers, as every vggnet head is) as a
    prepacked program; call :func:`fused_or_none` rather than this directly. ``per_shape=False``
    reorders each convolution's weights once for no input shape in particular (the earlier
    program, kept for ``benchmarks/prepack_per_shape.py``)."""

    def __init__(self, model: nn.Module, per_shape: bool = True):
        self.check_input = getattr(model, "check_input", None)
        self.steps = _compile(list(model.features.children()), per_shape)
        head = model.head
        if type(head).forward is not nn.Sequential.forward and not hasattr(head, "logits_layer"):
            raise TypeError(f"{type(head).__name__} is not a sequence of layers")
        self.steps += _compile(list(head.children()), per_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_input is not None:
            self.check_input(x)
        for step in self.steps:
            x = step(x)
        return x


def fused_or_none(model: nn.Module, per_shape: bool = True) -> FusedProgram | None:
    """The fused program of an inference-ready CPU model, or None where it cannot be built
    (no oneDNN, a GPU model, a head that is not a sequence, an op this PyTorch lacks)."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cpu" or not _mkldnn_ops_available():
        return None
    if not (hasattr(model, "features") and hasattr(model, "head")):
        return None
    try:
        with torch.inference_mode():
            return FusedProgram(model, per_shape)
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        log.warning("the fused CPU program could not be built (%s); running eager PyTorch",
                    str(exc).splitlines()[0])
        return None
