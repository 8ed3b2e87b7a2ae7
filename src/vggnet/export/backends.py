"""The inference backends of ``vggnet predict`` and ``vggnet serve``, behind one call.

Every backend is a callable that takes a float NCHW batch (normalised as the run's metadata
says) and returns float32 logits, with ``backend``, ``precision`` (what it really computes
in) and ``path`` (the file it runs) attributes:

=================  =========================================================================
``torch``          the checkpoint in PyTorch: batch norm folded, channels-last, weights cast
                   once to the precision (``auto``: bf16 where the CPU has it natively)
``onnx``           ONNX Runtime, fp32, on ``best.onnx`` (exported on first use)
``int8``           ONNX Runtime, int8, on ``best.int8.onnx`` (``vggnet export RUN --int8``)
``openvino``       OpenVINO, on ``best.xml`` (exported on first use), fp32 or bf16
``openvino-int8``  OpenVINO, int8, on ``best.int8.xml`` (``vggnet export RUN --format
                   openvino --int8``; without it, converted on first use from
                   ``best.int8.onnx``)
``pt2``            torch.export's ExportedProgram, fp32, on ``best.pt2`` (exported on first use)
``aoti``           an AOTInductor package, fp32, on ``best.aoti.pt2`` (``vggnet export RUN
                   --format aoti``: compiled ahead of time, no Python model code)
``auto``           the fastest of these the run and the installed packages allow, in the order
                   of :data:`AUTO_ORDER` (measured: benchmarks/RESULTS.md): an int8 export
                   when the run has one, else PyTorch
=================  =========================================================================
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ..errors import UsageError
from .names import AUTO_ORDER, BACKENDS  # noqa: F401 (AUTO_ORDER: the order of auto)

log = logging.getLogger(__name__)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def available(checkpoint: Path, backend: str) -> bool:
    """Whether ``backend`` can run this checkpoint without anything the user must do first."""
    int8_onnx = checkpoint.with_suffix(".int8.onnx")
    if backend == "torch":
        return True
    if backend == "onnx":
        return _installed("onnxruntime") and _installed("onnx")
    if backend == "int8":
        return _installed("onnxruntime") and int8_onnx.is_file()
    if backend == "openvino":  # exported by way of ONNX when best.xml is not there yet
        return _installed("openvino") and (_installed("onnx")
                                           or checkpoint.with_suffix(".xml").is_file())
    if backend == "openvino-int8":
        return _installed("openvino") and (int8_onnx.is_file()
                                           or checkpoint.with_suffix(".int8.xml").is_file())
    if backend == "pt2":  # exported on first use
        return True
    if backend == "aoti":  # compiled by `vggnet export RUN --format aoti` only (tens of s)
        return checkpoint.with_suffix(".aoti.pt2").is_file()
    raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def choose_backend(checkpoint: Path, backend: str = "auto") -> str:
    """``backend`` itself, or for ``auto`` the first of :data:`AUTO_ORDER` available here."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return next(b for b in AUTO_ORDER if available(checkpoint, b))


def _onnx_file(checkpoint: Path, int8: bool) -> Path:
    """``best.onnx`` (exported here when missing) or ``best.int8.onnx`` (made by ``vggnet
    export RUN --int8``, which needs calibration data)."""
    from ..run import load_checkpoint

    if int8:
        path = checkpoint.with_suffix(".int8.onnx")
        if not path.is_file():
            raise UsageError(f"no int8 model at {path}: make it with `vggnet export "
                             f"{checkpoint.parent} --int8` (calibrated on the run's training "
                             "images), then run again")
        return path
    path = checkpoint.with_suffix(".onnx")
    if not path.is_file():
        from .formats import export_onnx

        model, meta = load_checkpoint(checkpoint)
        log.info("exporting %s to %s for ONNX Runtime", checkpoint.name, path)
        export_onnx(model, path, meta.preprocessing.input_size)
    return path


def _openvino_file(checkpoint: Path, int8: bool) -> Path:
    """``best.xml`` (exported when missing) or ``best.int8.xml`` (NNCF's, from ``vggnet export
    RUN --format openvino --int8``; when missing, converted from ONNX Runtime's calibrated
    ``best.int8.onnx``, whose 7-bit weights agree less often with fp32)."""
    from ..run import load_checkpoint
    from .openvino import convert_onnx, export_openvino

    path = checkpoint.with_suffix(".int8.xml" if int8 else ".xml")
    if path.is_file():
        return path
    if int8:
        source = _onnx_file(checkpoint, int8=True)
        log.info("converting %s to %s for OpenVINO", source.name, path.name)
        return convert_onnx(source, path)
    model, meta = load_checkpoint(checkpoint)
    log.info("exporting %s to %s for OpenVINO", checkpoint.name, path)
    return export_openvino(model, path, meta.preprocessing.input_size)


def _pt2_engine(checkpoint: Path, backend: str):
    """best.pt2 (exported here when missing) or best.aoti.pt2 (compiled by `vggnet export`)."""
    from ..run import load_checkpoint
    from .pt2 import AotiClassifier, ExportedClassifier, export_pt2

    if backend == "aoti":
        path = checkpoint.with_suffix(".aoti.pt2")
        if not path.is_file():
            raise UsageError(f"no AOTInductor package at {path}: make it with `vggnet export "
                             f"{checkpoint.parent} --format aoti`, then run again")
        return AotiClassifier(path)
    path = checkpoint.with_suffix(".pt2")
    if not path.is_file():
        model, meta = load_checkpoint(checkpoint)
        log.info("exporting %s to %s with torch.export", checkpoint.name, path)
        export_pt2(model, path, meta.preprocessing.input_size)
    return ExportedClassifier(path)


def _need_onnxruntime(backend: str) -> None:
    """ONNX Runtime runs an int8 file alone; the fp32 one may have to be exported first,
    which needs onnx (as :func:`available` says)."""
    needs = ("onnxruntime",) if backend == "int8" else ("onnxruntime", "onnx")
    if not all(_installed(name) for name in needs):
        raise UsageError(f"--backend {backend} needs {' and '.join(needs)}: pip install "
                         "'vggnet[export]'")


def open_backend(checkpoint, backend: str = "auto", precision: str = "auto",
                 device: str | torch.device = "cpu", threads: int | None = None, model=None):
    """The inference callable of ``backend`` for a checkpoint (see the module's table).

    ``precision`` (auto, fp32, bf16) applies to ``torch`` and ``openvino``; the int8
    backends run int8 and the ONNX Runtime one fp32, and asking them for another precision
    is an error rather than a silent change. ``model``: the checkpoint's already loaded
    PyTorch model, for the torch backend."""
    from ..device import PRECISIONS
    from .optimize import InferenceEngine

    checkpoint = Path(checkpoint)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    name = choose_backend(checkpoint, backend)
    device = torch.device(device)
    if name != "torch" and device.type != "cpu":
        raise UsageError(f"--backend {name} runs on the CPU; use --backend torch for {device}")
    if name in ("onnx", "int8", "openvino-int8", "pt2", "aoti") and precision not in ("auto",):
        fixed = "int8" if "int8" in name else "fp32"
        if precision != fixed:
            raise UsageError(f"--backend {name} runs in {fixed}, not {precision}: use --backend "
                             "torch or openvino for other precisions")
    if name == "torch":
        if model is None:
            from ..run import load_checkpoint

            model, _ = load_checkpoint(checkpoint, device=device)
        engine = InferenceEngine(model, precision, channels_last=device.type == "cpu")
        engine.path = checkpoint
    elif name in ("pt2", "aoti"):
        engine = _pt2_engine(checkpoint, name)
    elif name in ("onnx", "int8"):
        _need_onnxruntime(name)
        from .quantize import OnnxClassifier

        engine = OnnxClassifier(_onnx_file(checkpoint, int8=name == "int8"), threads=threads)
    else:
        from .openvino import OpenVinoClassifier, need_openvino

        need_openvino()
        engine = OpenVinoClassifier(_openvino_file(checkpoint, int8=name == "openvino-int8"),
                                    threads=threads, precision=precision)
    engine.name = name
    return engine
