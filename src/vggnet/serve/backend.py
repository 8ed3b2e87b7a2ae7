"""The model behind the service: a run's checkpoint in any backend of
:mod:`vggnet.inference.backends` (PyTorch, ONNX Runtime, OpenVINO; fp32, bf16 or int8), with the
run's own preprocessing and class names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.names import readable
from ..errors import WeightsError
from ..inference.names import BACKENDS  # noqa: F401 (vggnet.serve.BACKENDS)
from ..io import open_image, sha256_file
from ..predict import Predictor
from ..run import resolve_checkpoint
from ..version import __version__

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What ``GET /v1/model`` says: enough to know exactly which weights answer."""

    run: str
    checkpoint: str
    backend: str
    precision: str
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
                 threads: int | None = None, precision: str = "auto"):
        checkpoint = resolve_checkpoint(run)
        self.predictor = Predictor(checkpoint, device=device, backend=backend,
                                   precision=precision, threads=threads)
        weights = Path(self.predictor.engine.path)
        if weights.suffix == ".xml":  # OpenVINO IR: the weights are in the .bin beside it
            weights = weights.with_suffix(".bin")
        log.info("serving %s: %s", checkpoint, self.predictor.describe())
        meta = self.predictor.meta
        self.info = ModelInfo(
            run=str(Path(run)), checkpoint=str(checkpoint),
            backend=getattr(self.predictor.engine, "name", self.predictor.backend),
            precision=self.predictor.precision,
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
        """Grad-CAM on the served PyTorch model (None for the other backends)."""
        if self.info.backend != "torch":
            return None
        from ..features.explain import Explainer

        return Explainer(None, predictor=self.predictor)
