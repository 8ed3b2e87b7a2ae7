"""int8 models for the CPU: ONNX Runtime static quantization, calibrated on real images.

Weights are quantized per output channel (signed int8), activations per tensor (unsigned
int8), in QDQ format, which ONNX Runtime runs with VNNI/AMX int8 kernels where the CPU has them.

Weights use 7 of the 8 bits (``reduce_range``) unless asked otherwise. On x86 CPUs without
VNNI (AVX2 alone, or AVX-512 without VNNI) ONNX Runtime multiplies uint8 activations by int8
weights with an instruction (VPMADDUBSW) whose 16-bit sums saturate with full-range weights:
measured on an AVX2-only EPYC with the quick CIFAR-10 model, full-range int8 agreed with fp32
on 70.4% of 2,000 test images, 7-bit weights on 99.3%. A model file does not know which CPU
will run it, so the portable choice is the default; ``reduce_range=False`` is for models
that will only run on CPUs with VNNI or AMX.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.augment import normalize
from ..errors import ConfigError
from ..evaluation.protocols import rescale
from ..inference.onnx import OnnxClassifier
from ..run import RunMetadata, open_run_data


def quantize_onnx(fp32_path, int8_path, calibration_images: torch.Tensor, mean, std, *,
                  batch_size: int = 32, input_size: int | None = None,
                  reduce_range: bool = True) -> Path:
    """Quantize an exported fp32 ONNX model (see :func:`export_onnx`) to int8.

    ``calibration_images`` are real uint8 images (N x C x H x W); a few hundred suffice.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    images = calibration_images
    if input_size and images.shape[-1] != input_size:
        images = rescale(images.float(), input_size).round().clamp(0, 255).to(torch.uint8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([normalize(images[i:i + batch_size], mean, std).numpy()
                                 for i in range(0, len(images), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.astype(np.float32)}

    # ONNX Runtime's quantizer logs its advice to pre-process the model (noise for VGG) on the
    # root logger; a filter on that logger drops just that message, for just this call (the
    # root's level, and every other record, are left alone)
    quiet = _DropMessages("pre-processing before quantization")
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        quantize_static(str(fp32_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        reduce_range=reduce_range)
    finally:
        root.removeFilter(quiet)
    return Path(int8_path)


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


def compare_int8(model, int8, images: torch.Tensor, labels: torch.Tensor,
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


def check_int8_counts(calibration: int, check_images: int | None) -> None:
    """Refuse image counts an int8 export cannot use (no calibration image leaves the
    quantizer nothing to measure; no test image, no agreement to report). ``check_images``
    None means the whole test split."""
    if calibration < 1:
        raise ConfigError(f"--calibration must be at least 1 image (a few hundred suffice), "
                          f"not {calibration}")
    if check_images is not None and check_images < 1:
        raise ConfigError(f"--check-images must be at least 1 test image, not {check_images}")


def quantize_run(model, meta: RunMetadata, fp32_onnx, int8_onnx, *, calibration: int = 512,
                 check_images: int | None = 1000, data_root=None,
                 reduce_range: bool = True) -> dict:
    """int8 ONNX model of a run's exported ``fp32_onnx``, calibrated on ``calibration`` of the
    run's training images, compared with ``model`` on ``check_images`` test images."""
    check_int8_counts(calibration, check_images)
    pre = meta.preprocessing
    # both sides see the images as `predict` does (shorter side to the test scale, centre
    # crop): a run that trains on crops smaller than its decoded images (scale jittering) is
    # exported at the crop size
    calib = open_run_data(meta, "train", n=calibration, data_root=data_root,
                          as_input=True).images
    quantize_onnx(fp32_onnx, int8_onnx, calib, pre.mean, pre.std, input_size=pre.input_size,
                  reduce_range=reduce_range)
    test = open_run_data(meta, "test", n=check_images, data_root=data_root, as_input=True)
    report = compare_int8(model.eval(), OnnxClassifier(int8_onnx), test.images,
                          test.labels, pre.mean, pre.std)
    return {"calibration_images": len(calib), **report}
