"""The files the inference backends run, written when a backend is first asked for them:
``best.onnx``, ``best.xml`` and ``best.pt2`` are exported from the checkpoint; the int8 models
and the AOTInductor package, which need calibration images or a compiler, only by
``vggnet export`` (an OpenVINO int8 model is converted from ONNX Runtime's when only that
one exists)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UsageError
from ..inference.backends import backend_file

log = logging.getLogger(__name__)


def ensure_backend_file(checkpoint, backend: str) -> Path | None:
    """The file ``backend`` runs for ``checkpoint``, exported here if it can be and is missing
    (None for ``torch``)."""
    checkpoint = Path(checkpoint)
    path = backend_file(checkpoint, backend)
    if path is None or path.is_file():
        return path
    if backend == "int8":
        raise UsageError(f"no int8 model at {path}: make it with `vggnet export "
                         f"{checkpoint.parent} --int8` (calibrated on the run's training "
                         "images), then run again")
    if backend == "aoti":
        raise UsageError(f"no AOTInductor package at {path}: make it with `vggnet export "
                         f"{checkpoint.parent} --format aoti`, then run again")
    if backend == "openvino-int8":  # ONNX Runtime's calibrated model, converted
        from .openvino import convert_onnx

        source = ensure_backend_file(checkpoint, "int8")
        log.info("converting %s to %s for OpenVINO", source.name, path.name)
        return convert_onnx(source, path)
    from ..run import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    size = meta.preprocessing.input_size
    if backend == "onnx":
        from .formats import export_onnx

        log.info("exporting %s to %s for ONNX Runtime", checkpoint.name, path)
        export_onnx(model, path, size)
    elif backend == "openvino":
        from .openvino import export_openvino

        log.info("exporting %s to %s for OpenVINO", checkpoint.name, path)
        export_openvino(model, path, size)
    else:
        from .pt2 import export_pt2

        log.info("exporting %s to %s with torch.export", checkpoint.name, path)
        export_pt2(model, path, size)
    return path
