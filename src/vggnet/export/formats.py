"""Export to ONNX (checked against ONNX Runtime by default); torch.export and AOTInductor
are in :mod:`vggnet.export.pt2`."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ExportError
from ..inference.engine import fold_batchnorm


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The (n_out, n_in) averaging matrix of adaptive average pooling along one axis."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class FixedAdaptivePool(nn.Module):
    """Adaptive average pooling for one known input size, written as two matrix products.

    ONNX has no adaptive pooling whose output is not a divisor of its input (e.g. a 1x1 map
    stretched to 7x7 for a 32x32 image); the same linear map as two einsums exports anywhere.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("ph", _pool_matrix(in_hw[0], out_hw[0]))
        self.register_buffer("pw", _pool_matrix(in_hw[1], out_hw[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oh,nchw,pw->ncop", self.ph, x, self.pw)


def make_exportable(model: nn.Module, input_size: int) -> nn.Module:
    """Replace the head's adaptive pooling by a fixed pooling for ``input_size`` inputs when
    ONNX cannot express it (the model must then be fed that size, as ONNX's graph says)."""
    head = model.head
    pool = getattr(head, "avgpool", None)
    if pool is None:
        return model
    c = model.model_config["in_channels"]
    with torch.no_grad():
        fmap = model.forward_features(torch.zeros(1, c, input_size, input_size))
    h, w = fmap.shape[-2:]
    out = pool(fmap).shape[-2:]
    if (h, w) == tuple(out) or (h % out[0] == 0 and w % out[1] == 0):
        return model  # identity or an exact divisor: ONNX handles it natively
    head.avgpool = FixedAdaptivePool((h, w), tuple(out))
    return model


def _example(model, input_size: int, batch: int = 2) -> torch.Tensor:
    c = model.model_config["in_channels"]
    return torch.randn(batch, c, input_size, input_size, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _quiet(*names: str):
    """These loggers at WARNING for the duration, then at the levels they had."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model, path, input_size: int = 224, *, opset: int = 18, check: bool = True,
                atol: float = 1e-4) -> Path:
    """ONNX with a dynamic batch axis; batch norm folded. With ``check``, ONNX Runtime runs
    the file and its outputs must match PyTorch's to ``atol`` times the outputs' scale
    (fp32 summation-order noise grows with the size of the logits)."""
    path = Path(path)
    model = make_exportable(fold_batchnorm(model).cpu().float().eval(), input_size)
    x = _example(model, input_size)
    # torch.export's graph (the dynamo exporter; the TorchScript one is deprecated): the same
    # outputs to the last bit on VGG-16-BN, as fast in ONNX Runtime and OpenVINO, twice the
    # export time (benchmarks/results/onnx_exporters.json)
    with _quiet("onnxscript", "onnx_ir"):  # their optimizer narrates every pass at INFO
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False,
                          input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                          optimize=True, external_data=False)
    _undo_shared_initializers(path)
    if check:
        got = onnx_outputs(path, x)
        with torch.inference_mode():
            _check_close(got, model(x), atol, path, "ONNX Runtime")
    return path


def _undo_shared_initializers(path: Path) -> None:
    """The exporter stores equal tensors (e.g. all-zero biases of a fresh model) once and
    feeds the other users through Identity nodes; quantizers and graph optimizers then no
    longer see those biases as constants (ONNX Runtime leaves such layers in fp32). Give
    every layer its own initializer again."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]),
                                           node.output[0])
            m.graph.initializer.append(copy)
        else:
            keep.append(node)
    if len(keep) != len(m.graph.node):
        del m.graph.node[:]
        m.graph.node.extend(keep)
        onnx.save(m, str(path))


def onnx_outputs(path, x: torch.Tensor) -> torch.Tensor:
    """What ONNX Runtime computes from an exported model for ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _check_close(got: torch.Tensor, expected: torch.Tensor, atol: float, path, what: str):
    """Outputs must agree to ``atol`` relative to their scale (at least 1): fp32 rounding
    differs between runtimes in proportion to the size of the numbers summed."""
    err = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if not err <= atol * scale:  # NaN fails too
        raise ExportError(f"{path}: {what} differs from PyTorch by {err:.2e} at output scale "
                          f"{scale:.3g} (tolerance {atol * scale:.2e})")
