"""Prediction from a checkpoint alone: the preprocessing and class names come with the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.augment import normalize
from .data.names import readable
from .errors import ImageReadError, InputError
from .io import open_image, resize_center_crop
from .run import load_checkpoint, read_run_metadata, resolve_checkpoint


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None = None  # (class name, probability), best first
    error: str | None = None


class Predictor:
    """Loads a checkpoint once and classifies images of any size and mode."""

    def __init__(self, checkpoint, device: str | torch.device = "cpu", onnx=None,
                 backend: str = "torch", precision: str = "auto", threads: int | None = None):
        """``backend``: which engine runs the network (see :mod:`vggnet.inference.backends`:
        torch, onnx, int8, openvino, openvino-int8, or auto for the fastest available);
        ``precision`` (auto, fp32, bf16) for the torch and openvino backends, where ``auto``
        is bf16 on CPUs with native bf16 and on GPUs. ``onnx``: run this exported file
        instead (``best.int8.onnx`` of ``vggnet export --int8`` in ONNX Runtime, or an
        OpenVINO ``.xml``); names and preprocessing still come from ``checkpoint``'s
        metadata. :attr:`backend` and :attr:`precision` say what really runs."""
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.device = torch.device(device)
        self._model = None
        if onnx is not None:
            self.meta = read_run_metadata(self.checkpoint)
            self.engine = _exported(Path(onnx), precision, threads)
            self.device = torch.device("cpu")
        else:
            if backend == "torch":  # loaded here: its metadata and the engine share one read
                self._model, self.meta = load_checkpoint(self.checkpoint, device=self.device)
            else:
                self.meta = read_run_metadata(self.checkpoint)
            self.engine = open_backend(self.checkpoint, backend, precision, self.device, threads,
                                       model=self._model)
            if backend == "torch" and self.engine.precision != "fp32":
                self._model = None  # the engine holds its own copy; reloaded if asked for
        self.backend, self.precision = self.engine.backend, self.engine.precision
        pre = self.meta.preprocessing
        self.input_size, self.test_scale = pre.input_size, pre.test_scale
        self.mean, self.std = pre.mean, pre.std
        self.classes = readable(list(self.meta.classes))  # WordNet ids with their names

    @property
    def model(self) -> torch.nn.Module:
        """The run's network as trained, in PyTorch (for features and Grad-CAM), loaded on
        first use when the engine does not already hold it."""
        if self._model is None:
            self._model, _ = load_checkpoint(self.checkpoint, device=self.device)
        return self._model

    def describe(self) -> str:
        """One line: which backend and precision answer, and from which file."""
        return f"{self.backend} backend, {self.precision}, {self.engine.path}"

    def crop(self, image):
        """The picture the network sees: shorter side to the test scale, centre crop."""
        return resize_center_crop(image, self.test_scale, self.input_size)

    def to_tensor(self, crop) -> torch.Tensor:
        """A cropped PIL RGB image -> normalised 1 x C x S x S tensor."""
        x = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        return normalize(x, self.mean, self.std)

    def preprocess(self, image) -> torch.Tensor:
        """A PIL RGB image -> normalised 1 x C x S x S tensor."""
        return self.to_tensor(self.crop(image))

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a normalised batch (N x C x H x W)."""
        if batch.is_floating_point() and not torch.isfinite(batch).all():
            bad = (~torch.isfinite(batch)).flatten(1).any(1).nonzero().flatten().tolist()
            raise InputError(f"input images {bad[:10]} hold NaN or infinite values; "
                             "check how they were produced or normalised (is a std 0?)")
        return self.engine(batch).float().softmax(1).cpu()

    def predict(self, paths, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """One :class:`Prediction` per path; unreadable files get an error, the rest go on."""
        top_k = max(1, min(top_k, len(self.classes)))
        results: list[Prediction] = []
        pending: list[tuple[Prediction, torch.Tensor]] = []

        def flush():
            if not pending:
                return
            probs = self.probabilities(torch.cat([x for _, x in pending]))
            values, indices = probs.topk(top_k, dim=1)
            for (pred, _), v, i in zip(pending, values, indices):
                pred.top = [(self.classes[j], float(p)) for p, j in zip(v.tolist(), i.tolist())]
            pending.clear()

        for path in paths:
            pred = Prediction(path=str(path))
            results.append(pred)
            try:
                pending.append((pred, self.preprocess(open_image(path))))
            except ImageReadError as exc:
                pred.error = str(exc)
            if len(pending) >= batch_size:
                flush()
        flush()
        return results


def _exported(path: Path, precision: str, threads: int | None):
    """The engine of an exported file: ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``."""
    from .inference.backends import open_file

    return open_file(path, precision, threads)


def open_backend(checkpoint, backend: str = "auto", precision: str = "auto",
                 device: str | torch.device = "cpu", threads: int | None = None, model=None):
    """The inference engine of ``backend`` for a checkpoint (the table of
    :mod:`vggnet.inference.backends`; ``auto``: the fastest available), exporting the file it
    runs first when that can be done here (best.onnx, best.xml, best.pt2)."""
    from .export.on_demand import ensure_backend_file
    from .inference.backends import check_request, choose_backend, open_engine

    name = choose_backend(Path(checkpoint), backend)
    check_request(name, precision, device, checkpoint)  # before any export work
    ensure_backend_file(checkpoint, name)
    return open_engine(checkpoint, name, precision, device, threads, model=model)
