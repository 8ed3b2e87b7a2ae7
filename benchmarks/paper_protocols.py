"""The paper's Tables 3-5 (single scale, multi-scale, dense vs multi-crop) on CIFAR-10.

Trains the quick recipe's narrow VGG-11-BN at fixed training scales S=32 and S=40 and at a
jittered scale S in [32, 48] (random 32x32 crops, the CIFAR analogue of 224 crops from
S in {256, 384} and [256, 512]), then evaluates each under the paper's test protocols.

    python benchmarks/paper_protocols.py --data-root ../shared/data --epochs 12 --limit 2000

Writes benchmarks/results/paper_protocols.{md,json}. Takes about 25 minutes on 2 CPU cores
with --limit 2000 (a class-stratified fifth of the test set; all 10,000 take about an hour).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from vggnet.data import load_splits
from vggnet.run import load_checkpoint
from vggnet.training.config import resolve
from vggnet.training.loop import train
from vggnet.evaluation.protocols import evaluate_protocol

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("S=32", 32, None), ("S=40", 40, None), ("S∈[32,48]", 32, 48)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "paper_protocols"))
    ap.add_argument("--limit", type=int, help="test images (default: all 10,000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    _, test = load_splits("cifar10", root=args.data_root)
    test = test.subset(args.limit)
    rows, t_start = [], time.time()
    for label, s_min, s_max in SETTINGS:
        run = Path(args.runs) / label.replace("∈", "in").replace("[", "").replace("]", "").replace(",", "-")
        if not (run / "last.safetensors").is_file() or \
                json.loads((run / "last.json").read_text())["epoch"] < args.epochs:
            cfg = resolve("cifar10_quick",
                          {"data_root": args.data_root, "epochs": args.epochs, "scale": s_min,
                           "scale_max": s_max, "tta": False, "progress": False, "out": str(run),
                           "overwrite": True})
            train(cfg)
        model, meta = load_checkpoint(run, which="last")
        pre = meta.preprocessing
        jittered = s_max is not None
        q_single = (s_min + s_max) // 2 if jittered else s_min
        q_multi = [32, 40, 48] if jittered else [q for q in (s_min - 8, s_min, s_min + 8) if q >= 32]

        def top1_err(protocol, scales, flip=True):
            r = evaluate_protocol(model, test.images, test.labels, protocol=protocol,
                                  scales=scales, crop=32, flip=flip, mean=pre.mean,
                                  std=pre.std, batch_size=500)
            return round(100 * (1 - r["top1"]), 2), round(100 * (1 - r["top5"]), 2)

        row = {"train_scale": label, "epochs": args.epochs,
               "single_Q": q_single, "single": top1_err("single", [q_single], flip=False),
               "dense_single": top1_err("dense", [q_single], flip=False),
               "multi_Q": q_multi, "dense_multi": top1_err("dense", q_multi),
               "multicrop_multi": top1_err("multicrop", q_multi),
               "dense+multicrop_multi": top1_err("dense+multicrop", q_multi)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(),
           "test_images": len(test), "minutes": round((time.time() - t_start) / 60, 1)}
    (out / "paper_protocols.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    lines = [
        "| train S | test Q | centre crop | dense | test Q (multi-scale) | dense | 5x5 multi-crop | dense + multi-crop |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda e: f"{e[0]:.2f} / {e[1]:.2f}"  # noqa: E731
        lines.append(f"| {r['train_scale']} | {r['single_Q']} | {f(r['single'])} | "
                     f"{f(r['dense_single'])} | "
                     f"{', '.join(map(str, r['multi_Q']))} | {f(r['dense_multi'])} | "
                     f"{f(r['multicrop_multi'])} | {f(r['dense+multicrop_multi'])} |")
    note = (f"\nTop-1 / top-5 error (%) on the CIFAR-10 test set ({len(test)} images, JPEG copy), "
            f"vggnet VGG-11-BN width 0.5 (linear head: dense = the whole image through the convolutions, "
            f"class scores averaged), {args.epochs} epochs, one run each. Single scale (the paper's "
            "Table 3): no flip; the multi-scale columns average softmax over the scales and horizontal flips "
            f"(multi-crop: 5x5 crops x 2 flips per scale). Measured on {env['cpu']} with "
            f"{env['threads']} torch threads, torch {env['torch']}, Python {env['python']}, "
            f"{env['minutes']} minutes in all.\n")
    (out / "paper_protocols.md").write_text("\n".join(lines) + "\n" + note)
    print("\n".join(lines) + "\n" + note)


if __name__ == "__main__":
    main()
