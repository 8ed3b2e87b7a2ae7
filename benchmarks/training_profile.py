"""Where the time of `vggnet train`'s CPU training step goes, part by part, on this CPU.

    python benchmarks/training_profile.py --data-root ../shared/data \
        --out benchmarks/results/training_profile_TAG.json

VGG-16-BN on CIFAR-10 at batch 128, the loop `benchmarks/training_loop.py` times (built by
``vggnet.bench.training_speed.build_engine_loop``), in the default precision unless
``--precision`` says otherwise; ``--max-pixels N`` runs it under another Winograd rule. The
operators' own CPU time under ``torch.profiler`` is summed into the parts of the step
(``vggnet.bench.step_profile.SCOPES`` and ``OPERATORS``): which part to work on next, on the
CPU at hand. Prints JSON with the machine and a Markdown table; ``report.py`` shows every
``training_profile_*.json`` in RESULTS.md.
"""

import argparse
import json
from pathlib import Path

from vggnet.bench import environment
from vggnet.bench.step_profile import profile_table, profile_training_step
from vggnet.data import load_splits

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="steps profiled (and per timed run)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--max-pixels", type=int, help="Winograd on maps of up to this many pixels")
    ap.add_argument("--out")
    args = ap.parse_args()
    train_set, _ = load_splits("cifar10", root=args.data_root)
    mean, std = train_set.stats()
    row = profile_training_step(train_set, mean, std, batch=args.batch, steps=args.steps,
                                precision=args.precision, max_pixels=args.max_pixels)
    result = {"environment": environment(), "profile": row}
    print(json.dumps(result, indent=2))
    print("\n".join(profile_table(row)))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
