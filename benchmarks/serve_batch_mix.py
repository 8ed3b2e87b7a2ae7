"""The PyTorch engine under a serve-shaped mix of batch sizes against fixed batches of 32.

`vggnet serve`'s batcher hands the engine whatever gathered in its window: any batch size
from 1 to 32. The engine prepacks convolution weights per input shape (the last few kept),
so a mix of sizes could make it prepack again and again. This times the time per image of a
seeded mix of 40 batch sizes drawn from 1-32 against batches of 32, in rounds that alternate
the two, for VGG-16 and VGG-16-BN at 224 px in the default precision, and reports the ratio
(the goal: no more than 1.1x).

    python benchmarks/serve_batch_mix.py --out benchmarks/results/serve_batch_mix_TAG.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch


def ms_per_image(engine, sizes: list[int]) -> float:
    images, start = 0, time.perf_counter()
    for b in sizes:
        engine(torch.randn(b, 3, 224, 224))
        images += b
    return 1000 * (time.perf_counter() - start) / images


def main() -> None:
    import vggnet
    from vggnet.bench import environment
    from vggnet.device import reuse_freed_memory
    from vggnet.inference.engine import InferenceEngine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    reuse_freed_memory()  # as in vggnet serve's processes
    rng = random.Random(0)
    mix = [rng.randint(1, 32) for _ in range(40)]
    fixed = [32] * (sum(mix) // 32)
    rows = {}
    for name in ("vgg16", "vgg16_bn"):
        torch.manual_seed(0)
        engine = InferenceEngine(vggnet.create_model(name).eval(), "auto")
        ms_per_image(engine, [1, 32])  # first calls: the check against eager, prepacking
        times = {"fixed_32": [], "mix_1_32": []}
        for _ in range(args.rounds):
            times["fixed_32"].append(ms_per_image(engine, fixed))
            times["mix_1_32"].append(ms_per_image(engine, mix))
        med = {k: round(statistics.median(v), 2) for k, v in times.items()}
        rows[name] = {"precision": engine.precision, "ms_per_image": med, "all": times,
                      "ratio_mix_to_fixed": round(med["mix_1_32"] / med["fixed_32"], 3)}
        print(name, json.dumps(rows[name]["ms_per_image"]), rows[name]["ratio_mix_to_fixed"],
              flush=True)
    report = {"command": "python benchmarks/serve_batch_mix.py --out " + args.out,
              "input": "3 x 224 x 224", "mix": mix, "rounds": args.rounds, "models": rows,
              "environment": environment()}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
