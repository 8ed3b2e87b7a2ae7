"""CPU benchmarks against torchvision baselines in the same process (same as `vggnet bench`).

    python benchmarks/cpu_benchmarks.py --data-root ../shared/data --run runs/cifar10_quick \
        --out benchmarks/results/cpu.json

Prints one JSON line per benchmark; see benchmarks/RESULTS.md for the recorded figures.
"""

import argparse

from vggnet.bench import run_all

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root")
    ap.add_argument("--run", help="a finished CIFAR-10 run (int8 agreement, time to 85%%)")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    run_all(out=args.out, data_root=args.data_root, quick_run=args.run, skip_int8=args.no_int8)
