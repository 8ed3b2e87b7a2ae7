"""PyTorch's own deployment formats: ``torch.export``'s ExportedProgram (``.pt2``) and an
AOTInductor package (``.aoti.pt2``: the network compiled ahead of time to a shared library,
run without the Python code that defines the model). Both are written with batch norm
folded, a dynamic batch axis and the run's input size, checked against the PyTorch model
like the ONNX export, and run by ``vggnet predict --backend pt2`` / ``--backend aoti``.

TorchScript, which these replace, is deprecated in the PyTorch vggnet pins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ExportError
from .formats import _check_close, _example
from ..inference.engine import fold_batchnorm
from ..inference.pt2 import AotiClassifier, ExportedClassifier

log = logging.getLogger(__name__)
MAX_BATCH = 4096


def exported_program(model, input_size: int = 224):
    """``model`` (batch norm folded, fp32, on the CPU) as a ``torch.export`` program whose
    batch axis is dynamic (1 to :data:`MAX_BATCH`) and whose image size is ``input_size``."""
    model = fold_batchnorm(model).cpu().float().eval()
    x = _example(model, input_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), model, x
    except Exception as exc:  # noqa: BLE001 - torch.export's errors have many types
        raise ExportError(f"torch.export could not capture the model: "
                          f"{str(exc).splitlines()[0][:300]}") from None


def export_pt2(model, path, input_size: int = 224, *, check: bool = True,
               atol: float = 1e-5) -> Path:
    """An ExportedProgram file (``torch.export.save``); with ``check``, loaded again and
    compared with the model at two batch sizes."""
    path = Path(path)
    program, model, x = exported_program(model, input_size)
    torch.export.save(program, str(path))
    if check:
        _check_file(ExportedClassifier(path), model, x, atol, "the exported program")
    return path


def export_aoti(model, path, input_size: int = 224, *, check: bool = True,
                atol: float = 1e-4) -> Path:
    """An AOTInductor package: the exported program compiled to C++ for this CPU (a C++
    compiler must be on the PATH; compiling takes tens of seconds)."""
    from torch._inductor import aoti_compile_and_package

    path = Path(path)
    program, model, x = exported_program(model, input_size)
    try:
        aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:  # noqa: BLE001 - a missing compiler, a failed build...
        raise ExportError(f"AOTInductor could not compile the model (it needs a C++ compiler, "
                          f"such as g++): {str(exc).splitlines()[0][:300]}") from None
    if check:
        _check_file(AotiClassifier(path), model, x, atol, "AOTInductor")
    return path


def _check_file(loaded, model, x: torch.Tensor, atol: float, what: str) -> None:
    """The file, loaded again, answers as ``model`` at the example's batch size and at 1 (the
    batch axis is dynamic)."""
    with torch.inference_mode():
        for batch in (x, x[:1]):
            _check_close(loaded(batch), model(batch), atol, loaded.path, what)


