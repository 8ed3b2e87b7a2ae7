"""Training throughput of `vggnet train`'s own loop against the tutorial loop, in one run.

    python benchmarks/training_loop.py --data-root ../shared/data \
        --out benchmarks/results/training_loop.json

The training half of `vggnet bench` alone (no ONNX export, no int8): since the redesign it times
``vggnet.training.loop.train_one_epoch``, built by training's own setup functions, so what it
measures is the loop `vggnet train` runs. bf16 rows appear only on CPUs with native bf16.
``--max-pixels 64`` also times that loop with Winograd on maps of up to 8x8 instead of this
CPU's own rule (``vggnet.training.winograd.AUTO_MAX_PIXELS``), so a rule is chosen on the whole
step, in the same run.
"""

import argparse
import json
from pathlib import Path

from vggnet.bench import bench_training, environment

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-pixels", type=int, action="append", default=[],
                    help="also time the bf16 step with Winograd on maps of up to this many "
                         "pixels (repeatable), beside this CPU's own rule")
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"environment": environment(),
              "training": bench_training(root=args.data_root, repeats=args.repeats,
                                         other_max_pixels=tuple(args.max_pixels))}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
