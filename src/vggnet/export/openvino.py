"""OpenVINO as a backend: a run exported as OpenVINO IR (``.xml`` + ``.bin``) and run by its CPU
plugin, in fp32, bf16 (where the CPU has AVX512-BF16 or AMX) or int8 (from the calibrated QDQ
ONNX model of :func:`vggnet.export.quantize.quantize_onnx`).

Needs the ``openvino`` extra (``pip install 'vggnet[openvino]'``).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_precision
from ..errors import ExportError, UsageError

INSTALL = "pip install 'vggnet[openvino]'"
# OpenVINO's names for the precisions we ask for
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def need_openvino():
    """The openvino module, or a one-line error that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise UsageError(f"the OpenVINO backend needs the openvino package: {INSTALL}") from None
    return openvino


def convert_onnx(onnx_path, xml_path) -> Path:
    """An ONNX file (fp32, or int8 in QDQ form) as OpenVINO IR, weights kept as they are (no
    fp16 compression: the precision is chosen when the model is compiled)."""
    ov = need_openvino()
    xml_path = Path(xml_path)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def export_openvino(model, path, input_size: int = 224, *, check: bool = True,
                    atol: float = 1e-4) -> Path:
    """fp32 OpenVINO IR of a model (batch norm folded, dynamic batch axis), by way of the ONNX
    export. With ``check``, OpenVINO runs it in fp32 and must match PyTorch to ``atol`` times
    the outputs' scale, as the ONNX export is checked."""
    from .formats import _check_close, _example, export_onnx, fold_batchnorm, make_exportable

    path = Path(path)
    if path.suffix != ".xml":
        raise UsageError(f"an OpenVINO model is a .xml file (with its .bin beside it), not {path}")
    need_openvino()
    with tempfile.TemporaryDirectory(prefix="vggnet-openvino-") as d:
        onnx_path = export_onnx(model, Path(d) / "model.onnx", input_size, check=False)
        convert_onnx(onnx_path, path)
    if check:
        reference = make_exportable(fold_batchnorm(model).cpu().float().eval(), input_size)
        x = _example(reference, input_size)
        got = OpenVinoClassifier(path, precision="fp32")(x)
        with torch.inference_mode():
            _check_close(got, reference(x), atol, path, "OpenVINO")
    return path


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
