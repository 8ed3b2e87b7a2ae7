"""CPU benchmarks, each against a named baseline measured in the same process.

1. training throughput: vggnet's engine (fp32, and the default precision) vs the common
   tutorial loop (torchvision ``vgg16_bn`` features + Linear head, ``DataLoader`` with PIL
   transforms), same model, same batch (`training_speed`);
2. inference latency of VGG16 at 224 (batch 1 and 32), every path side by side against
   torchvision eager fp32: vggnet's PyTorch engine (fp32, bf16), ONNX Runtime and OpenVINO
   (fp32, bf16, int8), with each reduced precision's top-1 agreement with fp32 on CIFAR-10
   (`inference_speed`);
3. time to accuracy of a finished run (from its metrics).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from ..device import cpu_bf16_flag, cpu_has_amx, onednn_isa_cap, resolve_precision
from .inference_speed import PATHS, agreement, bench_inference, inference_table
from .training_speed import bench_training

__all__ = ["environment", "bench_training", "bench_inference", "agreement", "inference_table",
           "PATHS", "time_to_accuracy", "run_all"]


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
            "onednn_max_cpu_isa": onednn_isa_cap(),  # set: oneDNN capped below the CPU
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
    if only in (None, "engines"):
        from .engines import bench_engines, engines_table

        results["engines"] = bench_engines()
        print(json.dumps(results["engines"]), flush=True)
        for line in engines_table(results["engines"]):
            print(line, flush=True)
    if quick_run and only is None and (Path(quick_run) / "metrics.jsonl").is_file():
        results["time_to_accuracy"] = time_to_accuracy(quick_run, 0.85)
        print(json.dumps(results["time_to_accuracy"]), flush=True)
    if out:
        from ..io import write_json

        write_json(out, results)
    return results
