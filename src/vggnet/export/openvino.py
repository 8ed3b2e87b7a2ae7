"""OpenVINO files: a run exported as OpenVINO IR (``.xml`` + ``.bin``), and its int8 model
(NNCF post-training quantization calibrated on real images, :func:`quantize_openvino`);
:mod:`vggnet.inference.openvino` runs them.

Needs the ``openvino`` extra (``pip install 'vggnet[openvino]'``: OpenVINO and NNCF).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..inference.openvino import INSTALL, OpenVinoClassifier, need_openvino

log = logging.getLogger(__name__)


def need_nncf():
    """The nncf module (OpenVINO's quantizer), or a one-line error that says how to install it."""
    need_openvino()
    # nncf imports torch's extension builder, which logs a warning about CUDA on machines
    # without it: noise for a CPU quantizer, quieted for the import only
    extension_log = logging.getLogger("torch.utils.cpp_extension")
    level = extension_log.level
    extension_log.setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise UsageError(f"OpenVINO's int8 model needs the nncf package: {INSTALL}") from None
    finally:
        extension_log.setLevel(level)
    return nncf


def convert_onnx(onnx_path, xml_path) -> Path:
    """An ONNX file (fp32, or int8 in QDQ form) as OpenVINO IR, weights kept as they are (no
    fp16 compression: the precision is chosen when the model is compiled)."""
    ov = need_openvino()
    xml_path = Path(xml_path)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def export_openvino(model, path, input_size: int = 224, *, check: bool = True,
                    atol: float = 1e-4) -> Path:
    """fp32 OpenVINO IR of a model (batch norm folded, dynamic batch axis), by way of the ONNX
    export. With ``check``, OpenVINO runs it in fp32 and must match PyTorch to ``atol`` times
    the outputs' scale, as the ONNX export is checked."""
    from .formats import _check_close, _example, export_onnx, fold_batchnorm, make_exportable

    path = Path(path)
    if path.suffix != ".xml":
        raise UsageError(f"an OpenVINO model is a .xml file (with its .bin beside it), not {path}")
    need_openvino()
    with tempfile.TemporaryDirectory(prefix="vggnet-openvino-") as d:
        onnx_path = export_onnx(model, Path(d) / "model.onnx", input_size, check=False)
        convert_onnx(onnx_path, path)
    if check:
        reference = make_exportable(fold_batchnorm(model).cpu().float().eval(), input_size)
        x = _example(reference, input_size)
        got = OpenVinoClassifier(path, precision="fp32")(x)
        with torch.inference_mode():
            _check_close(got, reference(x), atol, path, "OpenVINO")
    return path


def quantize_openvino(fp32_path, int8_xml, calibration_images: torch.Tensor, mean, std, *,
                      batch_size: int = 32, input_size: int | None = None) -> Path:
    """int8 OpenVINO IR of an fp32 model (``.xml`` or ``.onnx``), by NNCF's post-training
    quantization calibrated on real uint8 images (N x C x H x W; a few hundred suffice).

    The recipe, measured on the quick CIFAR-10 run (top-1 agreement with fp32 on its 10,000
    test images; benchmarks/RESULTS.md):

    * weights per channel with all 8 bits, activations asymmetric (NNCF's ``mixed`` preset),
      NNCF's bias correction: 99.5% where ONNX Runtime's 7-bit QDQ model gets 99.3%;
    * the first convolution kept in floating point (bf16 where the CPU has it, 0.6% of VGG-16's
      work): 99.6%. That layer is the one whose uint8 x int8 products overflow the 16-bit sums
      of CPUs without VNNI (AVX2): with it in int8 and all 8 bits, OpenVINO limited to AVX2
      agreed on 73.6%; with it in floating point, 99.6% there too. So one file serves every
      x86 CPU, without the 7-bit weights (``reduce_range``) that cost ONNX Runtime's model
      its accuracy.
    """
    nncf = need_nncf()
    ov = need_openvino()
    from ..data.augment import normalize
    from ..evaluation.protocols import rescale

    images = calibration_images
    if input_size and images.shape[-1] != input_size:
        images = rescale(images.float(), input_size).round().clamp(0, 255).to(torch.uint8)
    batches = [normalize(images[i:i + batch_size], mean, std).numpy().astype(np.float32)
               for i in range(0, len(images), batch_size)]
    model = ov.Core().read_model(str(fp32_path))
    first_conv = next(op.get_friendly_name() for op in model.get_ordered_ops()
                      if op.get_type_name() == "Convolution")
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE)
    with _quiet_nncf():
        quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                                  preset=nncf.QuantizationPreset.MIXED,
                                  ignored_scope=nncf.IgnoredScope(names=[first_conv]),
                                  advanced_parameters=advanced)
    int8_xml = Path(int8_xml)
    ov.save_model(quantized, str(int8_xml), compress_to_fp16=False)
    return int8_xml


def quantize_run_openvino(model, meta, fp32_model, int8_xml, *, calibration: int = 512,
                          check_images: int | None = 1000, data_root=None) -> dict:
    """:func:`quantize_openvino` for a run: calibrated on ``calibration`` of its training
    images, then compared with ``model`` (fp32 PyTorch) on ``check_images`` test images."""
    from ..run import open_run_data
    from .quantize import check_int8_counts, compare_int8

    check_int8_counts(calibration, check_images)
    pre = meta.preprocessing
    # as `predict` sees them, as in quantize_run
    calib = open_run_data(meta, "train", n=calibration, data_root=data_root,
                          as_input=True).images
    quantize_openvino(fp32_model, int8_xml, calib, pre.mean, pre.std, input_size=pre.input_size)
    test = open_run_data(meta, "test", n=check_images, data_root=data_root, as_input=True)
    report = compare_int8(model.eval(), OpenVinoClassifier(int8_xml), test.images,
                          test.labels, pre.mean, pre.std)
    return {"calibration_images": len(calib), **report}


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF's progress bars and INFO lines (which layers it skips) would land in the middle
    of vggnet's own output: quieted for the call, the logger's level restored after."""
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


