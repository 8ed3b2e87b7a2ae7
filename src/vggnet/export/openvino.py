"""OpenVINO as a backend: a run exported as OpenVINO IR (``.xml`` + ``.bin``) and run by its CPU
plugin, in fp32, bf16 (where the CPU has AVX512-BF16 or AMX) or int8 (NNCF post-training
quantization calibrated on real images, :func:`quantize_openvino`).

Needs the ``openvino`` extra (``pip install 'vggnet[openvino]'``: OpenVINO and NNCF).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_precision
from ..errors import ExportError, UsageError

INSTALL = "pip install 'vggnet[openvino]'"
log = logging.getLogger(__name__)
# OpenVINO's names for the precisions we ask for
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def need_openvino():
    """The openvino module, or a one-line error that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise UsageError(f"the OpenVINO backend needs the openvino package: {INSTALL}") from None
    return openvino


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


class OpenVinoClassifier:
    """Runs an OpenVINO model (IR or ONNX file) on float NCHW tensors, returning logits.

    ``precision``: ``auto`` (bf16 where the CPU has it natively, as vggnet's ``auto`` means
    everywhere), ``fp32`` or ``bf16``; an int8 model runs its quantized layers in int8 whatever
    is asked. :attr:`precision` says what the compiled model really runs (read from OpenVINO's
    runtime graph, not from what was asked)."""

    backend = "openvino"

    def __init__(self, path, threads: int | None = None, precision: str = "auto"):
        ov = need_openvino()
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"OpenVINO model not found: {path}")
        config = {"PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": _HINTS[resolve_precision("cpu", precision)]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO could not load {path}: {str(exc).splitlines()[0]}") \
                from None
        self.request = self.compiled.create_infer_request()
        self.path = path
        self.precision = runtime_precision(self.compiled)
        if precision == "bf16" and "bf16" not in self.precision:
            log.warning("OpenVINO computes in bf16 only on CPUs with AVX512-BF16 or AMX; on "
                        "this one it runs %s (--precision fp32 or auto asks for that without "
                        "this warning)", self.precision)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.contiguous().numpy().astype(np.float32, copy=False)})
        # the output buffer belongs to the request and is overwritten by the next call
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def runtime_precision(compiled) -> str:
    """What the compiled model's convolutions and fully connected layers really run in, from
    OpenVINO's runtime graph: ``int8``, ``bf16``, ``fp32``, or a mix such as ``int8+bf16``
    (most layers first)."""
    names = {"i8": "int8", "u8": "int8", "bf16": "bf16", "f32": "fp32", "f16": "fp16"}
    seen = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in ("Convolution", "FullyConnected", "MatMul"):
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            seen[names.get(prec, prec)] += 1
    return "+".join(p for p, _ in seen.most_common()) or "unknown"
