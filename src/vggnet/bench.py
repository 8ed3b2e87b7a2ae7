"""CPU benchmarks, each against a named baseline measured in the same process.

1. training throughput: vggnet's engine vs the common tutorial loop (torchvision ``vgg16_bn``
   features + Linear head, ``DataLoader`` with PIL transforms), same model, same batch;
2. inference latency of VGG16 at 224 (batch 1 and 32): vggnet optimized vs torchvision eager,
   ONNX Runtime fp32 and int8 vs torchvision fp32, with int8's top-1 agreement on CIFAR-10;
3. time to accuracy of a finished run (from its metrics).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn


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
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
                              precision: str, conv_algorithm: str = "auto") -> float:
    """The loop of ``vggnet train`` itself: the model, optimizer, schedule and step are built
    by the training package's own functions, and ``train_one_epoch`` runs the steps timed."""
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
    apply_conv_algorithm(model, cfg, device)  # as `vggnet train` does
    optimizer = build_optimizer(cfg, model, device)
    state = TrainState(model, optimizer, build_schedule(cfg, optimizer, len(loader)),
                       torch.Generator().manual_seed(0))
    step = Step(model, nn.CrossEntropyLoss(), autocast_for(device, precision))
    train_one_epoch(state, step, loader, limit=warmup)
    sums = train_one_epoch(state, step, loader, limit=steps)
    return sums.images / sums.seconds


def bench_training(data: str = "cifar10", root=None, batch: int = 128, steps: int = 20,
                   warmup: int = 3, workers: int = 2, repeats: int = 3) -> dict:
    """Each contender is timed ``repeats`` times, interleaved (so a slow spell of the machine
    hits all of them); the medians are compared, the ranges reported."""
    from .data import load_splits

    train_set, _ = load_splits(data, root=root)
    mean, std = train_set.stats()
    contenders = {"baseline": lambda: _tutorial_loop_throughput(train_set, mean, std, batch, steps,
                                                                warmup, workers),
                  "fp32": lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                            warmup, "fp32")}
    if cpu_has_bf16():  # the engine's default (winograd for small maps), and without it
        contenders["bf16"] = lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                               warmup, "bf16")
        contenders["bf16_direct"] = lambda: _vggnet_engine_throughput(
            train_set, mean, std, batch, steps, warmup, "bf16", conv_algorithm="direct")
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
           "ratio_fp32": round(med["fp32"] / med["baseline"], 2), "range_images_per_s": spread}
    if "bf16" in med:
        row.update(vggnet_bf16_images_per_s=round(med["bf16"], 1),
                   ratio_bf16=round(med["bf16"] / med["baseline"], 2),
                   vggnet_bf16_direct_images_per_s=round(med["bf16_direct"], 1),
                   ratio_bf16_direct=round(med["bf16_direct"] / med["baseline"], 2))
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


def bench_inference(batches=(1, 32), reps: int = 11, int8: bool = True, cifar_run=None,
                    data_root=None) -> dict:
    import torchvision

    from .export.optimize import optimize_for_inference
    from .models import create_model

    ref = torchvision.models.vgg16().eval()
    ours = optimize_for_inference(create_model("vgg16", weights=ref.state_dict()))
    rows = []
    fp32_onnx, int8_model = _onnx_vgg16(ref, data_root, int8)
    for b in batches:
        x = torch.randn(b, 3, 224, 224)
        contenders = {"ref": (ref, x), "ours": (ours, x.contiguous(memory_format=torch.channels_last))}
        if fp32_onnx is not None:
            contenders["ort"] = (fp32_onnx, x)
        if int8_model is not None:
            contenders["int8"] = (int8_model, x)
        t = _latencies(contenders, max(3, reps if b == 1 else reps // 2))
        row = {"batch": b, "torchvision_fp32_ms": round(1000 * t["ref"], 1),
               "vggnet_optimized_fp32_ms": round(1000 * t["ours"], 1),
               "ratio_fp32": round(t["ours"] / t["ref"], 2)}
        if "ort" in t:
            row.update(onnxruntime_fp32_ms=round(1000 * t["ort"], 1),
                       ratio_onnxruntime_fp32=round(t["ort"] / t["ref"], 2))
        if "int8" in t:
            row.update(onnxruntime_int8_ms=round(1000 * t["int8"], 1),
                       ratio_int8=round(t["int8"] / t["ref"], 2))
        rows.append(row)
    out = {"model": "VGG16 (D), 224x224, random weights",
           "timing": f"median of {reps} interleaved calls at batch 1, {max(3, reps // 2)} at "
                     "larger batches, after a warm-up", "latency": rows}
    if int8 and cifar_run:
        out["int8_agreement"] = int8_agreement(cifar_run, data_root)
    return out


def _onnx_vgg16(ref, data_root=None, int8: bool = True):
    """torchvision's VGG16 exported to ONNX and run by ONNX Runtime: fp32, and int8 calibrated
    on real (CIFAR-10, upscaled) images. (None, None) without the onnx extra installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, None
    from .data import load_splits
    from .errors import DataError
    from .export.formats import export_onnx
    from .export.quantize import OnnxClassifier, quantize_onnx
    from .models import create_model

    model = create_model("vgg16", weights=ref.state_dict())
    # ONNX Runtime holds the models in memory once loaded: the files (about 700 MB) go.
    with tempfile.TemporaryDirectory(prefix="vggnet-bench-") as d:
        tmp = Path(d)
        export_onnx(model, tmp / "fp32.onnx", 224, check=False)
        fp32 = OnnxClassifier(tmp / "fp32.onnx")
        if not int8:
            return fp32, None
        try:
            train_set, _ = load_splits("cifar10", root=data_root)
        except DataError:  # no CIFAR-10 here: calibrate on digits, also real images
            train_set, _ = load_splits("digits")
        calib = train_set.subset(64).images
        mean, std = train_set.stats()
        quantize_onnx(tmp / "fp32.onnx", tmp / "int8.onnx", calib, mean, std, batch_size=16,
                      input_size=224)
        return fp32, OnnxClassifier(tmp / "int8.onnx")


def int8_agreement(run, data_root=None, calibration: int = 512) -> dict:
    """Top-1 agreement of the int8 model with the fp32 model on the whole test set."""
    from .export.formats import export_onnx
    from .export.quantize import quantize_run
    from .run import load_checkpoint

    model, meta = load_checkpoint(run)
    with tempfile.TemporaryDirectory(prefix="vggnet-int8-") as d:
        tmp = Path(d)
        export_onnx(model, tmp / "fp32.onnx", meta.preprocessing.input_size)
        report = quantize_run(model, meta, tmp / "fp32.onnx", tmp / "int8.onnx",
                              calibration=calibration, check_images=None, data_root=data_root)
    return {"run": str(run), **{k: v for k, v in report.items() if k != "calibration_images"}}


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


def run_all(out=None, data_root=None, quick_run=None, skip_int8: bool = False) -> dict:
    results = {"environment": environment()}
    print(json.dumps(results["environment"]), flush=True)
    results["training"] = bench_training(root=data_root)
    print(json.dumps(results["training"]), flush=True)
    results["inference"] = bench_inference(int8=not skip_int8, cifar_run=quick_run,
                                           data_root=data_root)
    print(json.dumps(results["inference"]), flush=True)
    if quick_run and (Path(quick_run) / "metrics.jsonl").is_file():
        results["time_to_accuracy"] = time_to_accuracy(quick_run, 0.85)
        print(json.dumps(results["time_to_accuracy"]), flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results
