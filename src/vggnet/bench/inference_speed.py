"""Inference latency of VGG-16 at 224 px, every path side by side against torchvision eager
fp32 (vggnet's PyTorch engine, ONNX Runtime and OpenVINO on vggnet's exports), and each
reduced precision's top-1 agreement with fp32 on a trained run's test set."""

from __future__ import annotations

import statistics
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import torch

from ..device import cpu_bf16_flag


def _latencies(contenders: dict, reps: int) -> dict:
    """Median seconds per call of each ``name: (fn, input)``, timed interleaved (one call of
    each in turn, ``reps`` rounds, after a warm-up) so that a slow spell hits all alike."""
    times = {name: [] for name in contenders}
    with torch.inference_mode():
        for fn, x in contenders.values():
            fn(x)  # warm-up
        for _ in range(reps):
            for name, (fn, x) in contenders.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


# the contenders of the side-by-side table: name -> (backend, precision, what it is)
PATHS = {
    "torchvision": ("torch", "fp32", "torchvision vgg16() in eager fp32 (the baseline)"),
    "vggnet_fp32": ("torch", "fp32", "vggnet's PyTorch engine in fp32 (fused, prepacked)"),
    "vggnet_bf16": ("torch", "bf16", "vggnet's PyTorch engine in bf16 (weights cast once)"),
    "onnxruntime_fp32": ("onnx", "fp32", "ONNX Runtime, vggnet's ONNX export"),
    "onnxruntime_int8": ("int8", "int8", "ONNX Runtime, vggnet's calibrated int8 ONNX"),
    "openvino_fp32": ("openvino", "fp32", "OpenVINO, the same ONNX file, fp32"),
    "openvino_bf16": ("openvino", "bf16", "OpenVINO, the same file, bf16 (its default here)"),
    "openvino_int8": ("openvino-int8", "int8",
                      "OpenVINO, vggnet's int8 IR (NNCF, first convolution in floating point)"),
}


def bench_inference(batches=(1, 32), reps: int = 11, int8: bool = True, cifar_run=None,
                    data_root=None) -> dict:
    """VGG-16 at 224 px, every inference path side by side, timed interleaved in one process:
    vggnet's PyTorch engine (fp32, and bf16 where the CPU has it natively), ONNX Runtime and
    OpenVINO (fp32, bf16, int8) on vggnet's exported files, against torchvision eager fp32.
    With ``cifar_run``, each reduced-precision path's top-1 agreement with fp32 on the whole
    CIFAR-10 test set (random ImageNet weights would make agreement meaningless)."""
    import torchvision

    from ..inference.backends import AUTO_ORDER
    from ..inference.engine import InferenceEngine
    from ..models import create_model

    ref = torchvision.models.vgg16().eval()
    ours = create_model("vgg16", weights=ref.state_dict())
    paths = {"torchvision": ref, "vggnet_fp32": InferenceEngine(ours, "fp32")}
    native_bf16 = cpu_bf16_flag() is not None
    if native_bf16:  # emulated bf16 (AVX2) is slower than fp32: not a path anyone would pick
        paths["vggnet_bf16"] = InferenceEngine(ours, "bf16")
    with tempfile.TemporaryDirectory(prefix="vggnet-bench-") as d:
        paths.update(_exported_paths(ours, Path(d), data_root, int8, native_bf16))
    rows = []
    for b in batches:
        x = torch.randn(b, 3, 224, 224)
        t = _latencies({name: (fn, x) for name, fn in paths.items()},
                       max(3, reps if b == 1 else reps // 2))
        base = t["torchvision"]
        rows.append({"batch": b, "ms": {k: round(1000 * v, 1) for k, v in t.items()},
                     "ratio": {k: round(v / base, 3) for k, v in t.items()}})
    default = next(b for b in AUTO_ORDER
                   if b == "torch" or any(PATHS[k][0] == b for k in paths))
    out = {"model": "VGG16 (D), 224x224, random weights",
           "timing": f"median of {reps} interleaved calls at batch 1, {max(3, reps // 2)} at "
                     "larger batches, after a warm-up",
           "paths": {k: PATHS[k][2] for k in paths},
           "precision_ran": {k: getattr(fn, "precision", "fp32") for k, fn in paths.items()},
           "vggnet_default": default, "side_by_side": rows}
    if cifar_run:
        out["agreement"] = agreement(cifar_run, data_root, int8=int8)
    return out


def _exported_paths(model, tmp: Path, data_root, int8: bool, native_bf16: bool) -> dict:
    """The ONNX Runtime and OpenVINO contenders, on vggnet's own fp32 and int8 (calibrated on
    real CIFAR-10 images, upscaled) exports; those whose package is missing are left out."""
    if find_spec("onnx") is None:
        return {}
    from ..export.formats import export_onnx

    out = {}
    fp32 = export_onnx(model, tmp / "fp32.onnx", 224, check=False)
    calib = _calibration_images(data_root) if int8 else None
    if find_spec("onnxruntime") is not None:
        from ..export.quantize import quantize_onnx
        from ..inference.onnx import OnnxClassifier

        out["onnxruntime_fp32"] = OnnxClassifier(fp32)
        if calib:
            q = quantize_onnx(fp32, tmp / "int8.onnx", *calib, batch_size=16, input_size=224)
            out["onnxruntime_int8"] = OnnxClassifier(q)
    if find_spec("openvino") is not None:
        from ..export.openvino import quantize_openvino
        from ..inference.openvino import OpenVinoClassifier

        out["openvino_fp32"] = OpenVinoClassifier(fp32, precision="fp32")
        if native_bf16:
            out["openvino_bf16"] = OpenVinoClassifier(fp32, precision="bf16")
        if calib and find_spec("nncf") is not None:
            q = quantize_openvino(fp32, tmp / "int8.xml", *calib, batch_size=16, input_size=224)
            out["openvino_int8"] = OpenVinoClassifier(q)
    return out


def _calibration_images(data_root=None) -> tuple:
    """64 real images and their mean and std, to calibrate the int8 VGG16s: CIFAR-10 when
    found, else the digits."""
    from ..data import load_splits
    from ..errors import DataError

    try:
        train_set, _ = load_splits("cifar10", root=data_root)
    except DataError:  # no CIFAR-10 here: calibrate on digits, also real images
        train_set, _ = load_splits("digits")
    mean, std = train_set.stats()
    return train_set.subset(64).images, mean, std


def agreement(run, data_root=None, calibration: int = 512, int8: bool = True) -> dict:
    """Top-1 agreement of every reduced-precision path with the PyTorch fp32 model of a
    trained run, on its whole test set: bf16 in PyTorch (and in OpenVINO on CPUs with native
    bf16, the only ones where it runs bf16), int8 in ONNX Runtime and
    OpenVINO (each int8 model as `vggnet export RUN --int8` makes it for that runtime,
    calibrated on the same ``calibration`` training images).
    The exported files live in a temporary folder and are gone when this returns."""
    from ..export.formats import export_onnx
    from ..inference.engine import InferenceEngine
    from ..export.quantize import compare_int8, quantize_onnx
    from ..inference.onnx import OnnxClassifier
    from ..run import load_checkpoint, open_run_data

    model, meta = load_checkpoint(run)
    model.eval()
    pre = meta.preprocessing
    test = open_run_data(meta, "test", data_root=data_root, as_input=True)
    rows = {}

    def compare(name, engine):
        r = compare_int8(model, engine, test.images, test.labels, pre.mean, pre.std)
        rows[name] = {"precision": engine.precision, "top1_agreement": r["top1_agreement"],
                      "top1": r["int8_top1"], "fp32_top1": r["fp32_top1"]}

    compare("vggnet_bf16", InferenceEngine(model, "bf16"))
    if find_spec("onnx") is None:
        return {"run": str(run), "test_images": len(test.images), "paths": rows}
    calib = open_run_data(meta, "train", n=calibration, data_root=data_root,
                          as_input=True).images if int8 \
        else None
    with tempfile.TemporaryDirectory(prefix="vggnet-agree-") as d:
        fp32 = export_onnx(model, Path(d) / "fp32.onnx", pre.input_size)
        if calib is not None and find_spec("onnxruntime") is not None:
            q = quantize_onnx(fp32, Path(d) / "int8.onnx", calib, pre.mean, pre.std,
                              input_size=pre.input_size)
            compare("onnxruntime_int8", OnnxClassifier(q))
        if find_spec("openvino") is not None:
            from ..export.openvino import quantize_openvino
            from ..inference.openvino import OpenVinoClassifier

            if cpu_bf16_flag():  # elsewhere OpenVINO runs fp32 when asked for bf16
                compare("openvino_bf16", OpenVinoClassifier(fp32, precision="bf16"))
            if calib is not None and find_spec("nncf") is not None:
                xml = quantize_openvino(fp32, Path(d) / "int8.xml", calib, pre.mean, pre.std,
                                        input_size=pre.input_size)
                compare("openvino_int8", OpenVinoClassifier(xml))
    return {"run": str(run), "test_images": len(test.images), "paths": rows}


def inference_table(inf: dict) -> list[str]:
    """The side-by-side latency table (Markdown): milliseconds and the ratio to torchvision
    eager fp32 per path and batch size, the fastest of each batch in bold, and the
    reduced-precision paths' agreement with fp32 when measured."""
    rows = inf["side_by_side"]
    agree = (inf.get("agreement") or {}).get("paths", {})
    head = "| path | precision ran | " + " | ".join(f"batch {r['batch']}: ms (ratio)"
                                                    for r in rows) + " | top-1 agreement |"
    out = [head, "|---|---|" + "---|" * len(rows) + "---|"]
    best = {r["batch"]: min(r["ms"], key=r["ms"].get) for r in rows}
    for name in rows[0]["ms"]:
        cells = []
        for r in rows:
            cell = f"{r['ms'][name]} ({r['ratio'][name]:.3f}x)"
            cells.append(f"**{cell}**" if best[r["batch"]] == name else cell)
        a = agree.get(name)
        shown = f"{100 * a['top1_agreement']:.2f}%" if a else ("-" if name in (
            "torchvision", "vggnet_fp32", "onnxruntime_fp32", "openvino_fp32") else "not measured")
        out.append(f"| {name} | {inf['precision_ran'].get(name, '?')} | " + " | ".join(cells)
                   + f" | {shown} |")
    return out
