"""Time to 94% on CIFAR-10 on one GPU: vggnet's recipes, with airbench's train94 beside them.

    pip install airbench   # optional: the reference, run in the same session on the same GPU
    python benchmarks/gpu_time_to_94.py --data-root ../shared/data --out benchmarks/results/gpu.json

For each recipe: one-time costs (data decoding and upload, torch.compile warm-up) are
reported separately from the training + evaluation time until the test accuracy first
reaches 94%. Needs a CUDA GPU; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["configs/cifar10_speed.toml", "configs/cifar10_vgg16_bn.toml"]


def run_recipe(recipe: str, data_root: str, runs: Path) -> dict:
    from vggnet.engine.config import resolve
    from vggnet.engine.train import build_data, train

    cfg = resolve(ROOT / recipe, {"data_root": data_root, "progress": False,
                                  "out": str(runs / Path(recipe).stem), "overwrite": True})
    t0 = time.perf_counter()
    build_data(cfg)  # decode + cache once; counted as one-time cost
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    reached = next((h for h in result.history if h["test_top1"] >= 0.94), None)
    train_to_94 = total_to_94 = None
    if reached:
        upto = [h for h in result.history if h["epoch"] <= reached["epoch"]]
        train_to_94 = sum(h["train_seconds"] for h in upto)
        total_to_94 = train_to_94 + sum(h.get("eval_seconds", 0.0) for h in upto)
    return {"recipe": recipe, "data_load_s": round(load_s, 1), "wall_s": round(wall, 1),
            "best_top1": result.best_top1, "epochs": len(result.history),
            "epoch_reaching_94": reached and reached["epoch"],
            "train_seconds_to_94": train_to_94 and round(train_to_94, 1),
            # the measure: training plus the evaluations on the way
            "train_eval_seconds_to_94": total_to_94 and round(total_to_94, 1)}


def run_airbench() -> dict | None:
    try:
        import airbench  # noqa: F401
    except ImportError:
        return None
    import airbench

    # the package's documented use; it fetches CIFAR-10 itself, so it needs the network once
    t0 = time.perf_counter()
    airbench.warmup94()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = airbench.train94()
    return {"reference": "airbench.train94()", "warmup_s": round(warmup, 1),
            "seconds": round(time.perf_counter() - t0, 1),
            "accuracy": float(acc) if acc is not None else None}


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
    for recipe in RECIPES:
        results["recipes"].append(run_recipe(recipe, args.data_root, Path(args.runs)))
        print(json.dumps(results["recipes"][-1]), flush=True)
    results["airbench"] = run_airbench()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
