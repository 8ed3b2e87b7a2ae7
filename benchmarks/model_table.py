"""The table of docs/models.md, measured: for every model of the paper, its parameters and
multiply-adds at 224 px, whether torchvision publishes ImageNet weights for it and their
published top-1/top-5 (read from torchvision's own weight metadata), and the latency of one
224 px image with the backend `vggnet predict` uses by default for a run without an int8
export (vggnet's PyTorch engine, bf16 where the CPU has it natively), beside torchvision's
eager fp32 model in the same process (the ratio is the portable figure).

    python benchmarks/model_table.py --out benchmarks/results/models_TAG.json [--reps 7]

Prints the Markdown table; the JSON holds every figure with the hardware and versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

PAPER = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16_c": "C", "vgg16": "D",
         "vgg19": "E"}
DEPTH = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}


def published_accuracy(name: str) -> tuple[float, float] | None:
    """torchvision's published ImageNet-1k top-1/top-5 of ``name``'s weights, if any."""
    import torchvision.models as tvm

    enum = getattr(tvm, name.upper() + "_Weights", None)  # vgg16_bn -> VGG16_BN_Weights
    if enum is None:
        return None
    metrics = enum.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]
    return metrics["acc@1"], metrics["acc@5"]


def median_ms(fn, x, reps: int) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up (and the engine's first-call preparation)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    import torchvision

    from vggnet.bench import environment
    from vggnet.inference.engine import InferenceEngine
    from vggnet.models import create_model
    from vggnet.models.hub import URLS
    from vggnet.models.summary import summarize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for base, letter in PAPER.items():
        for name in (base, f"{base}_bn"):
            model = create_model(name).eval()
            engine = InferenceEngine(model, "auto")
            info = summarize(model, 224)
            row = {"model": name, "paper": letter + (" + BN" if name.endswith("_bn") else ""),
                   "depth": DEPTH[letter], "parameters": info.total_params,
                   "gmacs_224": round(info.total_macs / 1e9, 3),
                   "imagenet_weights": URLS.get(name), "acc1_acc5": published_accuracy(name),
                   "engine": f"vggnet torch engine, {engine.precision}",
                   "latency_ms": round(median_ms(engine, x, args.reps), 1)}
            ref = getattr(torchvision.models, name, None)
            if ref is not None:  # the same network in torchvision, eager fp32
                row["torchvision_fp32_ms"] = round(median_ms(ref().eval(), x, args.reps), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model, engine
    report = {"command": "python benchmarks/model_table.py --out " + args.out,
              "environment": environment(), "batch": 1, "input": "3 x 224 x 224",
              "reps": args.reps, "models": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


def table1() -> str:
    """The paper's Table 1 (ConvNet configurations, in columns) as Markdown, from
    :data:`vggnet.models.configs.CONFIGS`: each block's layers, then max-pooling, then the
    fully connected layers."""
    from vggnet.models.configs import CONFIGS, conv_spec

    letters = list(DEPTH)
    blocks = {}
    for letter in letters:
        layers, current = [], []
        for token in CONFIGS[letter]:
            if token == "M":
                layers.append(current)
                current = []
            elif token == "LRN":
                current.append("LRN")
            else:
                out, k = conv_spec(token)
                current.append(f"conv{k}-{out}")
        blocks[letter] = layers
    head = " | ".join(f"{x} ({DEPTH[x]} weight layers)" for x in letters)
    lines = [f"| {head} |", "|" + "---|" * len(letters),
             "| " + " | ".join(["input: 224 x 224 RGB image"] * len(letters)) + " |"]
    for b in range(5):
        depth = max(len(blocks[x][b]) for x in letters)
        for i in range(depth):
            cells = [blocks[x][b][i] if i < len(blocks[x][b]) else "" for x in letters]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("| " + " | ".join(["**maxpool**"] * len(letters)) + " |")
    for layer in ("FC-4096", "FC-4096", "FC-1000", "soft-max"):
        lines.append("| " + " | ".join([layer] * len(letters)) + " |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    lines = ["| model | paper | depth | parameters | GMACs at 224 | ImageNet weights | Acc@1 | "
             "Acc@5 | latency, batch 1 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        acc = r["acc1_acc5"] or ("-", "-")
        weights = "torchvision's" if r["imagenet_weights"] else "-"
        ratio = (f" ({r['latency_ms'] / r['torchvision_fp32_ms']:.2f}x torchvision)"
                 if r.get("torchvision_fp32_ms") else "")
        lines.append(f"| `{r['model']}` | {r['paper']} | {r['depth']} | "
                     f"{r['parameters'] / 1e6:.1f} M | {r['gmacs_224']:.2f} | {weights} | "
                     f"{acc[0]} | {acc[1]} | {r['latency_ms']:.0f} ms{ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
