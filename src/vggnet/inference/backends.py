"""The inference backends of ``vggnet predict`` and ``vggnet serve``, behind one interface.

Every backend is a callable that takes a float NCHW batch (normalised as the run's metadata
says) and returns float32 logits, with ``backend``, ``precision`` (what it really computes
in) and ``path`` (the file it runs) attributes:

=================  =========================================================================
``torch``          the checkpoint in PyTorch: batch norm folded, channels-last, weights cast
                   once to the precision (``auto``: bf16 where the CPU has it natively)
``onnx``           ONNX Runtime, fp32, on ``best.onnx`` (exported on first use by
                   :func:`vggnet.predict.open_backend`, as are best.xml and best.pt2)
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
from pathlib import Path

import torch

from ..errors import UsageError
from .names import AUTO_ORDER, BACKENDS  # noqa: F401 (AUTO_ORDER: the order of auto)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _can_export_onnx() -> bool:
    """torch.onnx's exporter needs onnx and onnxscript."""
    return _installed("onnx") and _installed("onnxscript")


def available(checkpoint: Path, backend: str) -> bool:
    """Whether ``backend`` can run this checkpoint without anything the user must do first."""
    int8_onnx = checkpoint.with_suffix(".int8.onnx")
    if backend == "torch":
        return True
    if backend == "onnx":  # exported on first use when best.onnx is not there yet
        return _installed("onnxruntime") and (checkpoint.with_suffix(".onnx").is_file()
                                              or _can_export_onnx())
    if backend == "int8":
        return _installed("onnxruntime") and int8_onnx.is_file()
    if backend == "openvino":  # exported by way of ONNX when best.xml is not there yet
        return _installed("openvino") and (_can_export_onnx()
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


def _need_onnxruntime(backend: str, exported: bool) -> None:
    """ONNX Runtime runs an exported file alone; one not yet exported needs onnx and
    onnxscript first (as :func:`available` says)."""
    needs = ("onnxruntime",) if exported else ("onnxruntime", "onnx", "onnxscript")
    if not all(_installed(name) for name in needs):
        raise UsageError(f"--backend {backend} needs {' and '.join(needs)}: pip install "
                         "'vggnet[export]'")


def backend_file(checkpoint: Path, backend: str) -> Path | None:
    """The file ``backend`` runs for this checkpoint (None for ``torch``, which runs the
    checkpoint itself)."""
    suffix = {"torch": None, "onnx": ".onnx", "int8": ".int8.onnx", "openvino": ".xml",
              "openvino-int8": ".int8.xml", "pt2": ".pt2", "aoti": ".aoti.pt2"}[backend]
    return None if suffix is None else Path(checkpoint).with_suffix(suffix)


def check_request(backend: str, precision: str, device: str | torch.device = "cpu",
                  checkpoint=None) -> None:
    """Refuse, before any work, what ``backend`` cannot do: another device than the CPU for
    all but torch, another precision than its own for the fixed-precision ones, and a
    backend whose packages are missing (those that export the checkpoint's file for it
    first too, when that file is not there)."""
    from ..device import PRECISIONS

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend != "torch" and torch.device(device).type != "cpu":
        raise UsageError(f"--backend {backend} runs on the CPU; use --backend torch for {device}")
    if backend in ("onnx", "int8", "openvino-int8", "pt2", "aoti") and precision != "auto":
        fixed = "int8" if "int8" in backend else "fp32"
        if precision != fixed:
            raise UsageError(f"--backend {backend} runs in {fixed}, not {precision}: use "
                             "--backend torch or openvino for other precisions")
    file = backend_file(Path(checkpoint), backend) if checkpoint is not None else None
    exported = backend in ("int8", "openvino-int8") or (file is not None and file.is_file())
    if backend in ("onnx", "int8"):
        _need_onnxruntime(backend, exported)
    elif backend in ("openvino", "openvino-int8"):
        from .openvino import need_openvino

        need_openvino()
        if not exported and not _can_export_onnx():
            raise UsageError(f"--backend {backend} exports the run to ONNX first, which needs "
                             "onnx and onnxscript: pip install 'vggnet[export]'")


def open_engine(checkpoint, backend: str, precision: str = "auto",
                device: str | torch.device = "cpu", threads: int | None = None, model=None):
    """The engine of a chosen ``backend`` (not ``auto``) for a checkpoint whose file for it
    exists (:func:`vggnet.predict.open_backend` exports the missing ones first).

    ``precision`` (auto, fp32, bf16) applies to ``torch`` and ``openvino``; the int8
    backends run int8 and the ONNX Runtime one fp32, and asking them for another precision
    is an error rather than a silent change. ``model``: the checkpoint's already loaded
    PyTorch model, for the torch backend."""
    from .engine import InferenceEngine

    checkpoint = Path(checkpoint)
    check_request(backend, precision, device, checkpoint)
    device = torch.device(device)
    if backend == "torch":
        if model is None:
            from ..run import load_checkpoint

            model, _ = load_checkpoint(checkpoint, device=device)
        engine = InferenceEngine(model, precision, channels_last=device.type == "cpu")
        engine.path = checkpoint
    else:
        path = backend_file(checkpoint, backend)
        if not path.is_file():
            raise UsageError(f"no {backend} model at {path}: make it with `vggnet export "
                             f"{checkpoint.parent}` (see --format and --int8), then run again")
        engine = open_file(path, precision, threads)
    engine.name = backend
    return engine


def open_file(path, precision: str = "auto", threads: int | None = None):
    """The engine of an exported file, by its kind: OpenVINO for ``.xml``, PyTorch for
    ``.pt2`` (an AOTInductor package for ``.aoti.pt2``), ONNX Runtime for ``.onnx``."""
    from ..errors import WeightsError

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"exported model not found: {path}")
    if path.suffix == ".xml":
        from .openvino import OpenVinoClassifier

        return OpenVinoClassifier(path, threads=threads, precision=precision)
    if path.suffix == ".pt2":
        from .pt2 import AotiClassifier, ExportedClassifier

        return (AotiClassifier if path.name.endswith(".aoti.pt2") else ExportedClassifier)(path)
    from .onnx import OnnxClassifier

    return OnnxClassifier(path, threads=threads)
