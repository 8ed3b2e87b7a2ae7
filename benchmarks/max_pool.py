"""2x2 max-pooling for CPU inference: vggnet's fused program against the alternatives.

    python benchmarks/max_pool.py [--batch 32] [--dtype bf16] [--rounds 7] [--out FILE]

VGG-16's five pools at 224 px (the maps its convolutions hand them), channels-last, as the
PyTorch engine runs them after freed memory is kept for reuse. Contenders, timed interleaved
(one call of each in turn), median per pool, summed over the five:

* ``max_pool2d``: PyTorch's, which also computes the indices a backward pass would need;
* ``four_views``: the fused program's earlier way, one maximum of four strided quarter-views;
* ``rows_then_columns``: ``vggnet.inference.fused.max_pool_2x2``, maxima of row pairs (whole
  contiguous W*C runs) then of column pairs in the half-size result.

Every contender is checked equal to ``max_pool2d`` first. Prints JSON with the machine, and
writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vggnet.bench import environment
from vggnet.device import reuse_freed_memory
from vggnet.inference.fused import max_pool_2x2

POOLS = [(64, 224), (128, 112), (256, 56), (512, 28), (512, 14)]  # VGG-16's, (channels, side)


def four_views(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    a = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    return torch.maximum(a, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]), out=a)


CONTENDERS = {"max_pool2d": lambda x: F.max_pool2d(x, 2), "four_views": four_views,
              "rows_then_columns": max_pool_2x2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    reuse_freed_memory()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    total = dict.fromkeys(CONTENDERS, 0.0)
    with torch.inference_mode():
        for channels, side in POOLS:
            x = torch.randn(args.batch, channels, side, side).to(dtype).contiguous(
                memory_format=torch.channels_last)
            expected = F.max_pool2d(x, 2)
            times = {name: [] for name in CONTENDERS}
            for name, fn in CONTENDERS.items():
                assert torch.equal(fn(x), expected), name  # and a warm-up
            for _ in range(args.rounds):
                for name, fn in CONTENDERS.items():
                    t0 = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - t0)
            for name in CONTENDERS:
                total[name] += statistics.median(times[name]) * 1000
    result = {"environment": environment(), "batch": args.batch, "dtype": args.dtype,
              "rounds": args.rounds, "five_pools_ms": {n: round(v, 2) for n, v in total.items()},
              "ratio_to_four_views": {n: round(v / total["four_views"], 3)
                                      for n, v in total.items()}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
