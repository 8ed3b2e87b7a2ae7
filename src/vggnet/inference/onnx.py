"""ONNX Runtime as a backend: an ONNX file (fp32, or int8 in QDQ form) run on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class OnnxClassifier:
    """Runs an ONNX model on float NCHW tensors, returning logits as a tensor.

    ONNX Runtime's worker threads busy-wait after each call unless ``spin`` is off (the
    default here): spinning saves a little latency but takes the cores from whatever runs
    next in the process (decoding, PyTorch), which on a small machine costs more.
    """

    backend = "onnxruntime"

    def __init__(self, path, threads: int | None = None, spin: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = Path(path)
        self.precision = onnx_precision(path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images": x.contiguous().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def onnx_precision(path) -> str:
    """``int8`` for a quantized (QDQ or QOperator) ONNX model, else ``fp32``. Without the
    onnx package (ONNX Runtime alone runs a model), told by vggnet's file name
    (``best.int8.onnx``)."""
    try:
        import onnx
    except ImportError:
        return "int8" if Path(path).name.endswith(".int8.onnx") else "fp32"
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    quantized = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}
    return "int8" if ops & quantized else "fp32"
