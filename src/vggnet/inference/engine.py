"""vggnet's PyTorch inference engine: an inference-optimized copy of a model (batch norm
folded into the convolutions, dropout gone, channels_last memory, weights cast once to the
inference precision, bf16 where the CPU computes it natively, optionally ``torch.compile``)
run as the fused CPU program of :mod:`vggnet.inference.fused` where it can be."""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm2d folded into the convolution
    before it; the BN layers become Identity, so layer names and taps are unchanged."""
    model = copy.deepcopy(model).eval()
    features = model.features
    names = [n for n, _ in features.named_children()]
    for i, name in enumerate(names):
        bn = getattr(features, name)
        if not isinstance(bn, nn.BatchNorm2d) or i == 0:
            continue
        before = getattr(features, names[i - 1])
        if isinstance(before, nn.Conv2d):
            conv_name = names[i - 1]
        elif (isinstance(before, nn.MaxPool2d) and i >= 2
              and isinstance(getattr(features, names[i - 2]), nn.Conv2d)
              and bool((bn.weight > 0).all())):
            # pooling before batch norm (vgg_speed): a max commutes with a per-channel
            # increasing affine map, so the BN folds into the convolution all the same
            conv_name = names[i - 2]
        else:
            continue
        setattr(features, conv_name, fuse_conv_bn_eval(getattr(features, conv_name), bn))
        setattr(features, name, nn.Identity())
    return model


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True,
                           compile: bool = False, precision: str = "fp32") -> nn.Module:
    """Fold batch norm, drop to eval mode, use channels_last; optionally compile.

    ``precision`` ``bf16`` (or ``auto`` on a CPU with native bf16, see
    :func:`vggnet.device.resolve_precision`) casts the weights to bf16 once, here, instead of
    autocast re-casting every weight on every call (138M of them for VGG-16); the returned
    module then takes and returns bf16 tensors (see :class:`InferenceEngine`, which casts)."""
    from ..device import resolve_precision

    model = fold_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    if resolve_precision(device, precision) == "bf16":
        model = model.to(torch.bfloat16)
    if compile:
        model = torch.compile(model)
    return model


class InferenceEngine:
    """The PyTorch backend of prediction and serving: an :func:`optimize_for_inference` copy of
    a model behind a call that takes float NCHW batches and returns float32 logits, so it is
    interchangeable with the ONNX Runtime and OpenVINO classifiers. :attr:`precision` is what
    it really computes in (``fp32`` or ``bf16``).

    On a CPU it runs the model as a :mod:`~vggnet.inference.fused` program (weights prepacked
    per input shape, ReLUs fused into the convolutions, pooling without indices), checked
    against the eager module once at every input shape it meets (:attr:`checked_shapes`).
    ``fused=False`` runs the eager module. vggnet's commands also keep freed activations for
    reuse in their own processes
    (:func:`vggnet.device.reuse_freed_memory`); the engine leaves a program that imports it
    as it was (call that function to get the same)."""

    backend = "torch"

    def __init__(self, model: nn.Module, precision: str = "auto", channels_last: bool = True,
                 fused: bool = True):
        from ..device import resolve_precision
        from .fused import fused_or_none

        device = next(model.parameters()).device
        self.precision = resolve_precision(device, precision)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.memory = torch.channels_last if channels_last else torch.contiguous_format
        self.module = optimize_for_inference(model, channels_last=channels_last,
                                             precision=self.precision)
        self.device = device
        self.program = fused_or_none(self.module) if fused else None
        self.checked_shapes: set[tuple] = set()  # input shapes the program was checked at

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype, memory_format=self.memory)
        if self.program is None:
            return self.module(x).float()
        if tuple(x.shape) not in self.checked_shapes:
            return self._checked_call(x)
        return self.program(x).float()

    def _checked_call(self, x: torch.Tensor) -> torch.Tensor:
        """The fused program's answer at a shape it has not run yet (its weights are
        reordered per shape), if it matches the eager module's; else the module's, and the
        module from now on."""
        expected = self.module(x).float()
        self.checked_shapes.add(tuple(x.shape))
        try:
            got = self.program(x).float()
        except (RuntimeError, NotImplementedError) as exc:
            problem = str(exc).splitlines()[0]
        else:
            # same kernels in the same precision: they differ by rounding order alone
            scale = max(1.0, float(expected.abs().max()))
            tol = (2e-2 if self.dtype == torch.bfloat16 else 1e-4) * scale
            err = float((got - expected).abs().max())
            if err <= tol:
                return got
            problem = f"outputs differ by {err:.3g} (tolerance {tol:.3g})"
        log.warning("the fused CPU program does not match eager PyTorch (%s); running eager",
                    problem)
        self.program = None
        return expected
