"""int8 inference on the CPU: ONNX Runtime static quantization, calibrated on real images.

Weights are quantized per output channel (signed int8), activations per tensor (unsigned
int8), in QDQ format, which ONNX Runtime runs with VNNI/AMX int8 kernels where the CPU has them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.augment import normalize


def quantize_onnx(fp32_path, int8_path, calibration_images: torch.Tensor, mean, std, *,
                  batch_size: int = 32, input_size: int | None = None) -> Path:
    """Quantize an exported fp32 ONNX model (see :func:`export_onnx`) to int8.

    ``calibration_images`` are real uint8 images (N x C x H x W); a few hundred suffice.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    images = calibration_images
    if input_size and images.shape[-1] != input_size:
        from ..evaluation.protocols import rescale

        images = rescale(images.float(), input_size).round().clamp(0, 255).to(torch.uint8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([normalize(images[i:i + batch_size], mean, std).numpy()
                                 for i in range(0, len(images), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.astype(np.float32)}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ONNX Runtime's advice to pre-process is noise for VGG
    try:
        quantize_static(str(fp32_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)
    return Path(int8_path)


class OnnxClassifier:
    """Runs an ONNX model on float NCHW tensors, returning logits as a tensor."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images": x.contiguous().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def run_images(meta: dict, split: str, n: int, data_root=None, seed: int = 1):
    """``n`` real uint8 images (and labels) of a run's own data set, at its input size: the
    calibration set (``split="train"``) or an agreement check (``"test"``)."""
    cfg = meta.get("config", {})
    pre = meta.get("preprocessing", {})
    size = int(pre.get("input_size", 224))
    if cfg.get("stream"):
        from ..data.stream import FolderImages, stream_splits

        folder = stream_splits(cfg["data"])[0 if split == "train" else 1]
        data = FolderImages(folder, train=False, crop=size,
                            test_scale=int(pre.get("test_scale", size)))
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(data), generator=g)[: 4 * n].tolist()
        items = [data[i] for i in idx]
        items = [it for it in items if it is not None][:n]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    from ..data import load_splits

    train, test = load_splits(cfg.get("data", "cifar10"), root=data_root or cfg.get("data_root"),
                              image_size=cfg.get("image_size"),
                              val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("seed", 0))
    data = (train if split == "train" else test).subset(n, seed=seed)
    return data.images, data.labels


def top1_agreement(model, int8: "OnnxClassifier", images: torch.Tensor, mean, std,
                   batch_size: int = 250) -> float:
    """The fraction of ``images`` on which the int8 model's top class equals the fp32 one's."""
    agree = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size], mean, std)
            agree += (model(x).argmax(1) == int8(x).argmax(1)).sum().item()
    return agree / max(1, len(images))
