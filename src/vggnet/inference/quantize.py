"""int8 inference on the CPU: ONNX Runtime static quantization, calibrated on real images.

Weights are quantized per output channel (signed int8), activations per tensor (unsigned
int8), in QDQ format, which ONNX Runtime runs with VNNI/AMX int8 kernels where the CPU has them.
"""

from __future__ import annotations

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

    quantize_static(str(fp32_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
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
