"""The model behind the service: a run's checkpoint in PyTorch, or its ONNX / int8 export in
ONNX Runtime, with the run's own preprocessing and class names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.names import readable
from ..errors import UsageError, WeightsError
from ..io import open_image, sha256_file
from ..predict import Predictor
from ..run import load_checkpoint, resolve_checkpoint
from ..version import __version__

BACKENDS = ("torch", "onnx", "int8")
log = logging.getLogger(__name__)


def _onnx_file(checkpoint: Path, backend: str) -> Path:
    """The exported model a backend runs: ``best.onnx`` (exported here when missing) or
    ``best.int8.onnx`` (made by ``vggnet export RUN --int8``, which needs calibration data)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError(f"--backend {backend} needs onnxruntime: pip install "
                         "'vggnet[export]'") from None
    if backend == "int8":
        path = checkpoint.with_suffix(".int8.onnx")
        if not path.is_file():
            raise UsageError(f"no int8 model at {path}: make it with `vggnet export "
                             f"{checkpoint.parent} --int8` (calibrated on the run's training "
                             "images), then serve again")
        return path
    path = checkpoint.with_suffix(".onnx")
    if not path.is_file():
        from ..export.formats import export_onnx

        model, meta = load_checkpoint(checkpoint)
        log.info("exporting %s to %s for ONNX Runtime", checkpoint.name, path)
        export_onnx(model, path, meta.preprocessing.input_size)
    return path


@dataclass
class ModelInfo:
    """What ``GET /v1/model`` says: enough to know exactly which weights answer."""

    run: str
    checkpoint: str
    backend: str
    architecture: str
    config: dict
    classes: list[str]
    preprocessing: dict
    weights_file: str
    weights_sha256: str
    vggnet_version: str = __version__

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ServedModel:
    """Decodes uploads and classifies batches. ``decode`` and ``probabilities`` are blocking
    (the service runs them in worker threads, never on its event loop)."""

    def __init__(self, run: str | Path, backend: str = "torch", device: str = "cpu",
                 threads: int | None = None):
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        checkpoint = resolve_checkpoint(run)
        onnx = _onnx_file(checkpoint, backend) if backend != "torch" else None
        self.predictor = Predictor(checkpoint, device=device, onnx=onnx)
        if onnx is not None and threads:
            from ..export.quantize import OnnxClassifier

            self.predictor.model = OnnxClassifier(onnx, threads=threads)
        if onnx is None:
            # channels_last + folded batch norm: the inference-optimized form of the model
            from ..export.optimize import optimize_for_inference

            self.predictor.model = optimize_for_inference(self.predictor.model)
        weights = Path(onnx) if onnx is not None else checkpoint
        meta = self.predictor.meta
        self.info = ModelInfo(
            run=str(Path(run)), checkpoint=str(checkpoint), backend=backend,
            architecture=meta.model_config.get("name", "?"), config=dict(meta.model_config),
            classes=readable(list(meta.classes)), preprocessing=meta.preprocessing.to_dict(),
            weights_file=weights.name, weights_sha256=sha256_file(weights))
        if not self.info.classes:
            raise WeightsError(f"{checkpoint}: the checkpoint names no classes; it cannot be "
                               "served")

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """One uploaded file's bytes -> a normalised 1 x C x S x S tensor (or an
        :class:`~vggnet.errors.ImageReadError` naming the file). Decoded exactly as
        ``vggnet predict`` decodes files (no reduced-scale JPEG draft), so both answer alike."""
        image = open_image(data, name=name)
        return self.predictor.preprocess(image)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.predictor.probabilities(batch)

    def explainer(self):
        """Grad-CAM on the served PyTorch model (None for the ONNX Runtime backends)."""
        if self.info.backend != "torch":
            return None
        from ..features.explain import Explainer

        return Explainer(None, predictor=self.predictor)
