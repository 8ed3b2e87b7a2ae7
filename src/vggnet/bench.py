"""CPU benchmarks, each against a named baseline measured in the same process.

1. training throughput: vggnet's engine (fp32, and the default precision) vs the common
   tutorial loop (torchvision ``vgg16_bn`` features + Linear head, ``DataLoader`` with PIL
   transforms), same model, same batch;
2. inference latency of VGG16 at 224 (batch 1 and 32), every path side by side against
   torchvision eager fp32: vggnet's PyTorch engine (fp32, bf16), ONNX Runtime and OpenVINO
   (fp32, bf16, int8), with each reduced precision's top-1 agreement with fp32 on CIFAR-10;
3. time to accuracy of a finished run (from its metrics).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from importlib.util import find_spec
from pathlib import Path

import torch
import torch.nn as nn

from .device import cpu_bf16_flag, cpu_has_amx, resolve_precision


def environment() -> dict:
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": cpu_bf16_flag(), "cpu_amx_used": cpu_has_amx(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")
            or os.environ.get("DNNL_MAX_CPU_ISA"),  # set: oneDNN capped below the CPU
            "auto_precision": resolve_precision("cpu", "auto"),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino"),
            "python": platform.python_version()}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --- 1. training throughput -----------------------------------------------------------------

def _tutorial_loop_throughput(train_set, mean, std, batch: int, steps: int, warmup: int,
                              workers: int) -> float:
    """The loop of the common tutorials: PIL transforms in DataLoader workers, eager fp32."""
    import torchvision
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])

    class PILDataset(torch.utils.data.Dataset):  # as torchvision.datasets.CIFAR10 serves items
        def __init__(self, images, labels):
            self.images = images.permute(0, 2, 3, 1).numpy()
            self.labels = labels.tolist()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return tf(Image.fromarray(self.images[i])), self.labels[i]

    loader = torch.utils.data.DataLoader(PILDataset(train_set.images, train_set.labels),
                                         batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    model = nn.Sequential(torchvision.models.vgg16_bn().features, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(512, len(train_set.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    model.train()
    it = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(it)
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def _vggnet_engine_throughput(train_set, mean, std, batch: int, steps: int, warmup: int,
                              precision: str, conv_algorithm: str = "auto",
                              max_pixels: int | None = None) -> float:
    """The loop of ``vggnet train`` itself: the model, optimizer, schedule and step are built
    by the training package's own functions, and ``train_one_epoch`` runs the steps timed.
    ``max_pixels`` replaces the largest map ``conv_algorithm = auto`` runs by Winograd on
    this CPU, to compare that rule with another one on the whole step."""
    from .data import TensorLoader
    from .device import autocast_for
    from .training.config import TrainConfig
    from .training.loop import Step, train_one_epoch
    from .training.setup import (apply_conv_algorithm, build_model, build_optimizer,
                                 build_schedule)
    from .training.state import TrainState

    device = torch.device("cpu")
    cfg = TrainConfig(model="vgg16_bn", head="linear", lr=0.01, precision=precision,
                      conv_algorithm=conv_algorithm, batch_size=batch, epochs=1)
    loader = TensorLoader(train_set, batch, mean=mean, std=std, train=True, crop_padding=4,
                          flip=True, channels_last=True, drop_last=True)
    model = build_model(cfg, len(train_set.classes)).to(memory_format=torch.channels_last)
    if apply_conv_algorithm(model, cfg, device) and max_pixels:  # as `vggnet train` does
        from .models.winograd import convert_to_winograd
        convert_to_winograd(model, max_pixels=max_pixels)  # the converted layers, re-ruled
    optimizer = build_optimizer(cfg, model, device)
    state = TrainState(model, optimizer, build_schedule(cfg, optimizer, len(loader)),
                       torch.Generator().manual_seed(0))
    step = Step(model, nn.CrossEntropyLoss(), autocast_for(device, precision))
    train_one_epoch(state, step, loader, limit=warmup)
    sums = train_one_epoch(state, step, loader, limit=steps)
    return sums.images / sums.seconds


def bench_training(data: str = "cifar10", root=None, batch: int = 128, steps: int = 20,
                   warmup: int = 3, workers: int = 2, repeats: int = 3,
                   other_max_pixels: tuple = ()) -> dict:
    """Each contender is timed ``repeats`` times, interleaved (so a slow spell of the machine
    hits all of them); the medians are compared, the ranges reported. ``other_max_pixels``
    adds, on bf16 CPUs, the default loop with Winograd on maps of up to each of those sizes
    instead of this CPU's own rule (``winograd_max_pixels`` in the result)."""
    from .data import load_splits
    from .models.winograd import auto_max_pixels

    train_set, _ = load_splits(data, root=root)
    mean, std = train_set.stats()
    contenders = {"baseline": lambda: _tutorial_loop_throughput(train_set, mean, std, batch, steps,
                                                                warmup, workers),
                  "fp32": lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                            warmup, "fp32")}
    if cpu_bf16_flag():  # the engine's default (winograd for small maps), and without it
        contenders["bf16"] = lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                               warmup, "bf16")
        contenders["bf16_direct"] = lambda: _vggnet_engine_throughput(
            train_set, mean, std, batch, steps, warmup, "bf16", conv_algorithm="direct")
        for px in other_max_pixels:
            contenders[f"bf16_winograd_{px}px"] = partial(
                _vggnet_engine_throughput, train_set, mean, std, batch, steps, warmup, "bf16",
                max_pixels=px)
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(fn())
    med = {name: statistics.median(v) for name, v in runs.items()}
    spread = {name: [round(min(v), 1), round(max(v), 1)] for name, v in runs.items()}
    row = {"model": "vgg16_bn (linear head), CIFAR-10 32x32", "batch": batch, "steps": steps,
           "repeats": repeats,
           "baseline": f"torchvision vgg16_bn + DataLoader({workers} workers, PIL transforms), fp32",
           "baseline_images_per_s": round(med["baseline"], 1),
           "vggnet_fp32_images_per_s": round(med["fp32"], 1),
           "ratio_fp32": round(med["fp32"] / med["baseline"], 2), "range_images_per_s": spread,
           "default_precision": resolve_precision("cpu", "auto"),
           "winograd_max_pixels": auto_max_pixels()}  # the largest map it took (auto)
    if "bf16" in med:
        row.update(vggnet_bf16_images_per_s=round(med["bf16"], 1),
                   ratio_bf16=round(med["bf16"] / med["baseline"], 2),
                   vggnet_bf16_direct_images_per_s=round(med["bf16_direct"], 1),
                   ratio_bf16_direct=round(med["bf16_direct"] / med["baseline"], 2))
        for px in other_max_pixels:  # the same step under another Winograd rule
            row.setdefault("winograd_rules", {})[str(px)] = {
                "images_per_s": round(med[f"bf16_winograd_{px}px"], 1),
                "ratio": round(med[f"bf16_winograd_{px}px"] / med["baseline"], 2)}
    return row


# --- 2. inference latency -------------------------------------------------------------------

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

    from .device import cpu_bf16_flag
    from .export.backends import AUTO_ORDER
    from .export.optimize import InferenceEngine
    from .models import create_model

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
    from .export.formats import export_onnx

    out = {}
    fp32 = export_onnx(model, tmp / "fp32.onnx", 224, check=False)
    calib = _calibration_images(data_root) if int8 else None
    if find_spec("onnxruntime") is not None:
        from .export.quantize import OnnxClassifier, quantize_onnx

        out["onnxruntime_fp32"] = OnnxClassifier(fp32)
        if calib:
            q = quantize_onnx(fp32, tmp / "int8.onnx", *calib, batch_size=16, input_size=224)
            out["onnxruntime_int8"] = OnnxClassifier(q)
    if find_spec("openvino") is not None:
        from .export.openvino import OpenVinoClassifier, quantize_openvino

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
    from .data import load_splits
    from .errors import DataError

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
    from .export.formats import export_onnx
    from .export.optimize import InferenceEngine
    from .export.quantize import OnnxClassifier, compare_int8, quantize_onnx
    from .run import load_checkpoint, open_run_data

    model, meta = load_checkpoint(run)
    model.eval()
    pre = meta.preprocessing
    test = open_run_data(meta, "test", data_root=data_root)
    rows = {}

    def compare(name, engine):
        r = compare_int8(model, engine, test.images, test.labels, pre.mean, pre.std)
        rows[name] = {"precision": engine.precision, "top1_agreement": r["top1_agreement"],
                      "top1": r["int8_top1"], "fp32_top1": r["fp32_top1"]}

    compare("vggnet_bf16", InferenceEngine(model, "bf16"))
    if find_spec("onnx") is None:
        return {"run": str(run), "test_images": len(test.images), "paths": rows}
    calib = open_run_data(meta, "train", n=calibration, data_root=data_root).images if int8 \
        else None
    with tempfile.TemporaryDirectory(prefix="vggnet-agree-") as d:
        fp32 = export_onnx(model, Path(d) / "fp32.onnx", pre.input_size)
        if calib is not None and find_spec("onnxruntime") is not None:
            q = quantize_onnx(fp32, Path(d) / "int8.onnx", calib, pre.mean, pre.std,
                              input_size=pre.input_size)
            compare("onnxruntime_int8", OnnxClassifier(q))
        if find_spec("openvino") is not None:
            from .export.openvino import OpenVinoClassifier, quantize_openvino

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


# --- 3. time to accuracy --------------------------------------------------------------------

def time_to_accuracy(run, target: float) -> dict:
    """Training seconds until the test top-1 first reached ``target`` (from metrics.jsonl)."""
    history = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    total = 0.0
    for h in history:
        total += h["train_seconds"]
        if h["test_top1"] >= target:
            return {"run": str(run), "target": target, "epoch": h["epoch"],
                    "train_seconds": round(total, 1), "test_top1": h["test_top1"]}
    return {"run": str(run), "target": target, "reached": False,
            "best_top1": max(h["test_top1"] for h in history), "train_seconds": round(total, 1)}


def run_all(out=None, data_root=None, quick_run=None, skip_int8: bool = False,
            only: str | None = None) -> dict:
    results = {"environment": environment()}
    print(json.dumps(results["environment"]), flush=True)
    if only in (None, "training"):
        results["training"] = bench_training(root=data_root)
        print(json.dumps(results["training"]), flush=True)
    if only in (None, "inference"):
        results["inference"] = bench_inference(int8=not skip_int8, cifar_run=quick_run,
                                               data_root=data_root)
        print(json.dumps(results["inference"]), flush=True)
        for line in inference_table(results["inference"]):
            print(line, flush=True)
    if quick_run and only is None and (Path(quick_run) / "metrics.jsonl").is_file():
        results["time_to_accuracy"] = time_to_accuracy(quick_run, 0.85)
        print(json.dumps(results["time_to_accuracy"]), flush=True)
    if out:
        from .io import write_json

        write_json(out, results)
    return results
