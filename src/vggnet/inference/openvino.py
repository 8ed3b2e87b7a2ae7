"""OpenVINO as a backend: an OpenVINO model (IR or ONNX file) run by its CPU plugin in fp32,
bf16 (where the CPU has AVX512-BF16 or AMX) or int8 (a quantized model's layers).

Needs the ``openvino`` extra (``pip install 'vggnet[openvino]'``)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_precision
from ..errors import ExportError, UsageError

INSTALL = "pip install 'vggnet[openvino]'"
log = logging.getLogger(__name__)
# OpenVINO's names for the precisions we ask for
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def need_openvino():
    """The openvino module, or a one-line error that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise UsageError(f"the OpenVINO backend needs the openvino package: {INSTALL}") from None
    return openvino


class OpenVinoClassifier:
    """Runs an OpenVINO model (IR or ONNX file) on float NCHW tensors, returning logits.

    ``precision``: ``auto`` (bf16 where the CPU has it natively, as vggnet's ``auto`` means
    everywhere), ``fp32`` or ``bf16``; an int8 model runs its quantized layers in int8 whatever
    is asked. :attr:`precision` says what the compiled model really runs (read from OpenVINO's
    runtime graph, not from what was asked)."""

    backend = "openvino"

    def __init__(self, path, threads: int | None = None, precision: str = "auto"):
        ov = need_openvino()
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"OpenVINO model not found: {path}")
        config = {"PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": _HINTS[resolve_precision("cpu", precision)]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO could not load {path}: {str(exc).splitlines()[0]}") \
                from None
        self.request = self.compiled.create_infer_request()
        self.path = path
        self.precision = runtime_precision(self.compiled)
        if precision == "bf16" and "bf16" not in self.precision:
            log.warning("OpenVINO computes in bf16 only on CPUs with AVX512-BF16 or AMX; on "
                        "this one it runs %s (--precision fp32 or auto asks for that without "
                        "this warning)", self.precision)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.contiguous().numpy().astype(np.float32, copy=False)})
        # the output buffer belongs to the request and is overwritten by the next call
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def runtime_precision(compiled) -> str:
    """What the compiled model's convolutions and fully connected layers really run in, from
    OpenVINO's runtime graph: ``int8``, ``bf16``, ``fp32``, or a mix such as ``int8+bf16``
    (most layers first)."""
    names = {"i8": "int8", "u8": "int8", "bf16": "bf16", "f32": "fp32", "f16": "fp16"}
    seen = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in ("Convolution", "FullyConnected", "MatMul"):
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            seen[names.get(prec, prec)] += 1
    return "+".join(p for p, _ in seen.most_common()) or "unknown"
