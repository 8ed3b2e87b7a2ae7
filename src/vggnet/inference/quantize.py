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
    """Runs an ONNX model on float NCHW tensors, returning logits as a tensor.

    ONNX Runtime's worker threads busy-wait after each call unless ``spin`` is off (the
    default here): spinning saves a little latency but takes the cores from whatever runs
    next in the process (decoding, PyTorch), which on a small machine costs more.
    """

    def __init__(self, path, threads: int | None = None, spin: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images": x.contiguous().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def run_images(meta: dict, split: str, n: int | None, data_root=None, seed: int = 1):
    """Real uint8 images (and labels) of a run's own data set, at its input size: ``n`` of
    them, class-stratified (all with ``None``), for calibration (``split="train"``) or for
    checking (``"test"``)."""
    cfg = meta.get("config", {})
    pre = meta.get("preprocessing", {})
    size = int(pre.get("input_size", 224))
    if cfg.get("stream"):
        from ..data.stream import FolderImages, stream_splits

        folder = stream_splits(cfg["data"])[0 if split == "train" else 1]
        data = FolderImages(folder, train=False, crop=size,
                            test_scale=int(pre.get("test_scale", size)))
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(data), generator=g)
        idx = (idx if n is None else idx[: 4 * n]).tolist()
        items = [it for it in (data[i] for i in idx) if it is not None][:n]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    from ..data import load_splits

    train, test = load_splits(cfg.get("data", "cifar10"), root=data_root or cfg.get("data_root"),
                              image_size=cfg.get("image_size"),
                              val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("seed", 0))
    data = (train if split == "train" else test).subset(n, seed=seed)
    return data.images, data.labels


def compare_int8(model, int8: "OnnxClassifier", images: torch.Tensor, labels: torch.Tensor,
                 mean, std, batch_size: int = 500) -> dict:
    """How often the int8 model's top class equals the fp32 model's, and both accuracies."""
    agree = correct_fp32 = correct_int8 = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size], mean, std)
            y = labels[i:i + batch_size]
            a, b = model(x).argmax(1), int8(x).argmax(1)
            agree += (a == b).sum().item()
            correct_fp32 += (a == y).sum().item()
            correct_int8 += (b == y).sum().item()
    n = max(1, len(images))
    return {"test_images": len(images), "top1_agreement": round(agree / n, 4),
            "fp32_top1": round(correct_fp32 / n, 4), "int8_top1": round(correct_int8 / n, 4)}


def quantize_run(model, meta: dict, fp32_onnx, int8_onnx, *, calibration: int = 512,
                 check_images: int | None = 1000, data_root=None) -> dict:
    """int8 ONNX model of a run's exported ``fp32_onnx``, calibrated on ``calibration`` of the
    run's training images, compared with ``model`` on ``check_images`` test images."""
    pre = meta["preprocessing"]
    calib, _ = run_images(meta, "train", calibration, data_root=data_root)
    quantize_onnx(fp32_onnx, int8_onnx, calib, pre["mean"], pre["std"],
                  input_size=int(pre["input_size"]))
    images, labels = run_images(meta, "test", check_images, data_root=data_root)
    report = compare_int8(model.eval(), OnnxClassifier(int8_onnx), images, labels,
                          pre["mean"], pre["std"])
    return {"calibration_images": len(calib), **report}
