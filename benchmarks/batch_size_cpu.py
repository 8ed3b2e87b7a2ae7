"""Training speed per image against batch size, for the imagenette_quick recipe's model, in one run.

    python benchmarks/batch_size_cpu.py --out benchmarks/results/batch_size_cpu.json

Times optimizer steps of VGG-11-BN at half width with the linear head (the recipe's model) on
random 96 px inputs in channels_last, bf16 autocast where the CPU has native bf16 (else fp32),
SGD with Nesterov momentum and label smoothing as the recipe. The data pipeline is left out:
this isolates the model's cost per image. Batch sizes are timed in interleaved rounds, so a
machine that speeds up or slows down during the run affects them alike; the ratio to the
baseline batch (128, the recipe's previous setting) is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from vggnet.bench import environment
from vggnet.device import resolve_precision
from vggnet.device import autocast_for
from vggnet.io import write_json
from vggnet.models import create_model


def _stepper(batch: int, size: int, precision: str):
    torch.manual_seed(0)
    model = create_model("vgg11_bn", num_classes=10, width=0.5, head="linear")
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    autocast = autocast_for(torch.device("cpu"), precision)

    def step():
        with autocast():
            loss = criterion(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def images_per_second(step, batch: int, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--baseline", type=int, default=128)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--images", type=int, default=1024, help="images per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.baseline not in args.batches:
        ap.error(f"--baseline {args.baseline} must be one of --batches {args.batches}")
    precision = resolve_precision("cpu", "auto")
    steppers = {b: _stepper(b, args.size, precision) for b in args.batches}
    for b, step in steppers.items():  # warm-up: allocator, oneDNN kernels
        images_per_second(step, b, 2)
    speeds: dict[int, list[float]] = {b: [] for b in args.batches}
    for _ in range(args.rounds):
        for b, step in steppers.items():
            speeds[b].append(images_per_second(step, b, max(1, args.images // b)))
    base = statistics.median(speeds[args.baseline])
    rows = [{"batch": b, "images_per_second": round(statistics.median(v), 1),
             "per_round": [round(s, 1) for s in v],
             "ratio_to_baseline": round(statistics.median(v) / base, 3)}
            for b, v in speeds.items()]
    result = {"environment": environment(), "model": "vgg11_bn width 0.5, linear head",
              "size": args.size, "precision": precision, "baseline_batch": args.baseline,
              "rows": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
