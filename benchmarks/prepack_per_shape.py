"""The PyTorch engine's convolution weights reordered per input shape, against once for all.

    python benchmarks/prepack_per_shape.py [--precision fp32] [--batches 1 32] [--rounds 7]
                                           [--out FILE]

oneDNN chooses how to block a convolution's weights (output channels per block) for the
problem it runs: the input's batch, size and channels. The fused program used to reorder the
weights once, for no shape in particular; wherever oneDNN then chose another blocking, it
reordered the weights again inside every call. Contenders, both VGG-16 (D) at 224 px with
random weights in the same ``InferenceEngine`` wrapper, timed interleaved (one call of each
in turn), median of ``--rounds``:

* ``once``: ``fused_or_none(model, per_shape=False)``, the earlier program;
* ``per_shape``: the program as it is now, weights reordered for each input shape it meets
  (the last four kept).

The two are checked equal first. Prints JSON with the machine, and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vggnet.bench import environment
from vggnet.inference.fused import fused_or_none
from vggnet.inference.engine import InferenceEngine
from vggnet.io import write_json
from vggnet.models import create_model


def engines(precision: str) -> dict:
    torch.manual_seed(0)
    model = create_model("vgg16").eval()
    out = {}
    for name, per_shape in (("once", False), ("per_shape", True)):
        engine = InferenceEngine(model, precision)
        engine.program = fused_or_none(engine.module, per_shape=per_shape)
        engine._checked = True  # the two are compared with each other below
        out[name] = engine
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    contenders = engines(args.precision)
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224)
        outs = {name: fn(x) for name, fn in contenders.items()}  # and a warm-up
        err = float((outs["once"] - outs["per_shape"]).abs().max())
        assert err <= 1e-3 * max(1.0, float(outs["once"].abs().max())), err
        times = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
        ms = {n: round(1000 * statistics.median(v), 1) for n, v in times.items()}
        rows.append({"batch": batch, "ms": ms,
                     "ratio_per_shape_to_once": round(ms["per_shape"] / ms["once"], 3)})
    result = {"environment": environment(), "model": "VGG16 (D), 224x224, random weights",
              "precision": args.precision, "rounds": args.rounds, "rows": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
