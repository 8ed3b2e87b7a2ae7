"""What keeping freed memory for reuse (vggnet.device.reuse_freed_memory) buys a forward pass.

    python benchmarks/freed_memory.py [--batch 32] [--precision bf16] [--rounds 3]

glibc maps every block over 32 MiB afresh and unmaps it when freed, so the large activations
of a CNN are page-faulted in again on every call. The setting is per process and cannot be
undone cleanly, so each side runs in its own subprocess: the same eager VGG-16 (weights cast
once, channels-last) timed with glibc's defaults and with the thresholds raised, alternating
the two for ``--rounds`` rounds. Prints one JSON line with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time, torch
from vggnet.device import reuse_freed_memory
from vggnet.inference.engine import optimize_for_inference
from vggnet.models import create_model
batch, precision, reuse = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
if reuse:
    assert reuse_freed_memory()
model = optimize_for_inference(create_model("vgg16"), precision=precision)
dtype = torch.bfloat16 if precision == "bf16" else torch.float32
x = torch.randn(batch, 3, 224, 224).to(dtype).contiguous(memory_format=torch.channels_last)
times = []
with torch.inference_mode():
    model(x)
    for _ in range(3):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
print(json.dumps(statistics.median(times)))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs = {"glibc_default": [], "reuse_freed_memory": []}
    for _ in range(args.rounds):
        for name, flag in (("glibc_default", "0"), ("reuse_freed_memory", "1")):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.batch), args.precision,
                                  flag], capture_output=True, text=True, check=True)
            runs[name].append(float(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    from vggnet.bench import environment

    print(json.dumps({"model": "vgg16 (eager, weights cast once, channels-last), 224 px",
                      "batch": args.batch, "precision": args.precision,
                      "seconds": {k: round(v, 3) for k, v in med.items()},
                      "all": runs, "ratio": round(med["reuse_freed_memory"]
                                                  / med["glibc_default"], 3),
                      "environment": environment()}))


if __name__ == "__main__":
    main()
