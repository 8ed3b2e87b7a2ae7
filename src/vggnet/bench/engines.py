"""The PyTorch engines side by side on the models people serve: vggnet's fused program against
torch.compile (inductor with freezing, the public way to get prepacked weights) and
OpenVINO, on ``vgg16`` and ``vgg16_bn``, in fp32 and bf16.

Each contender runs the same random weights at the same input; they are timed interleaved (one
call of each in turn, after a warm-up) so that a slow spell of the machine hits all alike. An
inductor contender compiles once per input shape: its first call at each batch size is timed
apart and reported as ``compile_s``. Ratios are to OpenVINO in the same precision (the issue's
yardstick: ``vggnet_bf16`` against ``openvino_bf16``) and to torchvision's eager fp32.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import torch

from ..device import cpu_bf16_flag

ENGINES = {
    "torchvision_fp32": "torchvision's model in eager fp32 (the baseline)",
    "vggnet_fp32": "vggnet's engine (fused program: batch norm folded, ReLU fused, weights "
                   "prepacked per shape) in fp32",
    "vggnet_bf16": "vggnet's engine in bf16 (weights cast once)",
    "inductor_fp32": "torch.compile (inductor, freezing: weights constant-folded and "
                     "prepacked) of the same folded, channels-last model, fp32",
    "inductor_bf16": "the same in bf16",
    "openvino_fp32": "OpenVINO on vggnet's ONNX export, fp32",
    "openvino_bf16": "OpenVINO on the same file, bf16 (its default on such CPUs)",
}


class Compiled:
    """torch.compile with inductor's freezing of :func:`optimize_for_inference`'s module,
    behind the engines' call (float NCHW in, float32 logits out). ``compile_s``: the seconds
    of the first call at each input shape, where inductor compiles."""

    backend = "torch"

    def __init__(self, model, precision: str):
        from ..inference.engine import optimize_for_inference

        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        module = optimize_for_inference(copy.deepcopy(model), precision=precision)
        self.module = torch.compile(module, options={"freezing": True})
        self.compile_s: dict[int, float] = {}

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype, memory_format=torch.channels_last)
        if x.shape[0] in self.compile_s:
            return self.module(x).float()
        start = time.perf_counter()
        out = self.module(x).float()
        self.compile_s[x.shape[0]] = round(time.perf_counter() - start, 1)
        return out


def _contenders(name: str, size: int, compile: bool, openvino: bool, tmp: Path) -> dict:
    import torchvision

    from ..inference.engine import InferenceEngine
    from ..models import create_model

    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)().eval()
    if name.endswith("_bn"):  # batch-norm statistics that are not the identity
        with torch.no_grad():
            ref.train()(torch.randn(4, 3, size, size))
        ref.eval()
    ours = create_model(name, weights=ref.state_dict()).eval()
    precisions = ["fp32"] + (["bf16"] if cpu_bf16_flag() else [])  # emulated bf16: no one's pick
    out = {"torchvision_fp32": ref}
    for p in precisions:
        out[f"vggnet_{p}"] = InferenceEngine(ours, p)
    if compile:
        for p in precisions:
            out[f"inductor_{p}"] = Compiled(ours, p)
    if openvino and find_spec("openvino") is not None and find_spec("onnxscript") is not None:
        from ..export.formats import export_onnx
        from ..inference.openvino import OpenVinoClassifier

        onnx = export_onnx(ours, tmp / f"{name}.onnx", size, check=False)
        for p in precisions:
            out[f"openvino_{p}"] = OpenVinoClassifier(onnx, precision=p)
    return out


def bench_engines(models=("vgg16", "vgg16_bn"), batches=(1, 32), size: int = 224,
                  reps: int = 7, compile: bool = True, openvino: bool = True) -> dict:
    """Milliseconds per call of every contender of :data:`ENGINES` that runs here, per model
    and batch size, and their ratios (see the module's docstring)."""
    rows = []
    compile_s = {}
    with tempfile.TemporaryDirectory(prefix="vggnet-engines-") as d:
        for name in models:
            contenders = _contenders(name, size, compile, openvino, Path(d))
            for b in batches:
                x = torch.randn(b, 3, size, size)
                times = {k: [] for k in contenders}
                with torch.inference_mode():
                    for fn in contenders.values():
                        fn(x)  # warm-up (and, for inductor, the compile: timed apart)
                    for _ in range(reps if b == 1 else max(3, reps // 2)):
                        for k, fn in contenders.items():
                            start = time.perf_counter()
                            fn(x)
                            times[k].append(time.perf_counter() - start)
                rows.append(engine_row(name, b, {k: statistics.median(v)
                                                 for k, v in times.items()}))
            compile_s[name] = {k: fn.compile_s for k, fn in contenders.items()
                               if isinstance(fn, Compiled)}
    return {"input": f"3 x {size} x {size}", "timing": f"median of {reps} interleaved calls "
            f"at batch 1, {max(3, reps // 2)} at larger batches, after a warm-up",
            "contenders": {k: v for k, v in ENGINES.items() if any(k in r["ms"] for r in rows)},
            "rows": rows, "compile_seconds": compile_s}


def engine_row(model: str, batch: int, seconds: dict) -> dict:
    """One row of the results: each contender's milliseconds, and its time as a multiple of
    OpenVINO's in its own precision (when OpenVINO ran in it) and of torchvision's fp32."""
    ms = {k: round(1000 * v, 2) for k, v in seconds.items()}
    same = {k: f"openvino_{k.rsplit('_', 1)[1]}" for k in ms}
    return {"model": model, "batch": batch, "ms": ms,
            "vs_openvino_same_precision": {k: round(seconds[k] / seconds[o], 3)
                                           for k, o in same.items() if o in seconds},
            "vs_torchvision_fp32": {k: round(v / seconds["torchvision_fp32"], 3)
                                    for k, v in seconds.items()}}


def engines_table(result: dict) -> list[str]:
    """Markdown: per model and batch, each contender's ms and its time as a multiple of
    OpenVINO's in the same precision (the fastest of each row in bold)."""
    names = list(result["contenders"])
    out = ["| model | batch | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
    for r in result["rows"]:
        best = min(r["ms"], key=r["ms"].get)
        cells = []
        for k in names:
            if k not in r["ms"]:
                cells.append("-")
                continue
            ratio = r["vs_openvino_same_precision"].get(k)
            cell = f"{r['ms'][k]} ms" + (f" ({ratio:.2f}x)" if ratio is not None else "")
            cells.append(f"**{cell}**" if k == best else cell)
        out.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    return out
