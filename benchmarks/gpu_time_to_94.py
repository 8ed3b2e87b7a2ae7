"""Time to 94% on CIFAR-10 on one GPU: vggnet's recipes, with airbench's train94 beside them.

    pip install airbench==0.1.8   # optional: the reference, run on the same GPU and images
    python benchmarks/gpu_time_to_94.py --data-root ../shared/data --out benchmarks/results/gpu.json

For each recipe: one-time costs (data decoding and upload, torch.compile warm-up) are
reported separately from the training + evaluation time until the test accuracy first
reaches 94%. Needs a CUDA GPU; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["cifar10_speed", "cifar10_vgg16_bn"]  # packaged recipes (vggnet recipes)


def time_to(history: list[dict], target: float):
    """(first epoch whose test top-1 reaches ``target``, training seconds up to it, training +
    evaluation seconds up to it), or (None, None, None) if no epoch does."""
    reached = next((h for h in history if h["test_top1"] >= target), None)
    if reached is None:
        return None, None, None
    upto = [h for h in history if h["epoch"] <= reached["epoch"]]
    train_s = sum(h["train_seconds"] for h in upto)
    total_s = train_s + sum(h.get("eval_seconds", 0.0) for h in upto)
    return reached["epoch"], round(train_s, 1), round(total_s, 1)


def run_recipe(recipe: str, data_root: str, runs: Path, reference_top1: float | None = None) -> dict:
    """Train one recipe; time to 94% and, given airbench's accuracy on the same images
    (``reference_top1``), time to that accuracy: on a copy of CIFAR-10 where 94% is out of
    reach (the JPEG copy), the side-by-side figure that still means something."""
    from vggnet.training.config import resolve
    from vggnet.training.setup import build_data
    from vggnet.training.loop import train

    cfg = resolve(recipe, {"data_root": data_root, "progress": False,
                                  "out": str(runs / Path(recipe).stem), "overwrite": True})
    t0 = time.perf_counter()
    build_data(cfg)  # decode + cache once; counted as one-time cost
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    epoch, train_s, total_s = time_to(result.history, 0.94)
    row = {"recipe": recipe, "data_load_s": round(load_s, 1), "wall_s": round(wall, 1),
           "best_top1": result.best_top1, "epochs": len(result.history),
           "epoch_reaching_94": epoch, "train_seconds_to_94": train_s,
           # the measure: training plus the evaluations on the way
           "train_eval_seconds_to_94": total_s}
    if reference_top1 is not None:
        epoch, _, total_s = time_to(result.history, reference_top1)
        row.update(reference_top1=reference_top1, epoch_reaching_reference=epoch,
                   train_eval_seconds_to_reference=total_s)
    return row


def write_airbench_data(train, test, folder: Path) -> None:
    """airbench reads ``cifar10/train.pt`` and ``cifar10/test.pt`` under the working folder
    (uint8 images in NHWC, labels, class names) and downloads CIFAR-10 when they are absent:
    write vggnet's images there, so that both train and test on the same pixels, offline."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in (("train.pt", train), ("test.pt", test)):
        torch.save({"images": split.images.permute(0, 2, 3, 1).contiguous(),
                    "labels": split.labels.clone(), "classes": list(split.classes)}, folder / name)


def run_airbench(data_root: str, workdir: Path) -> dict | None:
    """airbench 0.1.8's ``train94`` on the same GPU and the same images; None if not installed.
    Its training (whitening init included) and its flip + translate evaluation are timed
    apart, after its own warm-up; it evaluates only once, at the end."""
    try:
        import airbench
    except ImportError:
        return None
    from vggnet.data import load_splits

    train, test = load_splits("cifar10", root=data_root)
    write_airbench_data(train, test, workdir / "cifar10")
    here = os.getcwd()
    os.chdir(workdir)
    try:
        t0 = time.perf_counter()
        airbench.warmup94()
        torch.cuda.synchronize()
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = airbench.train94(verbose=False)  # returns the trained network
        torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        t0 = time.perf_counter()
        accuracy = airbench.evaluate(model, loader, tta_level=2)
        torch.cuda.synchronize()
        eval_s = time.perf_counter() - t0
    finally:
        os.chdir(here)
    return {"reference": f"airbench {getattr(airbench, '__version__', '0.1.8')} train94()",
            "warmup_s": round(warmup, 1), "train_seconds": round(train_s, 2),
            "eval_seconds": round(eval_s, 2), "train_eval_seconds": round(train_s + eval_s, 2),
            "test_top1": round(float(accuracy), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "gpu"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this benchmark measures GPU time to 94%; run it on a GPU machine")
    from vggnet.bench import environment

    results = {"environment": environment(), "recipes": []}
    # the reference first: its accuracy on these images is the second target of the recipes
    results["airbench"] = run_airbench(args.data_root, Path(args.runs))
    print(json.dumps(results["airbench"]), flush=True)
    reference = results["airbench"] and results["airbench"]["test_top1"]
    for recipe in RECIPES:
        results["recipes"].append(run_recipe(recipe, args.data_root, Path(args.runs), reference))
        print(json.dumps(results["recipes"][-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
