"""`vggnet bench`: CPU benchmarks against named baselines, reported as ratios."""

from __future__ import annotations


NAME = "bench"
# shown at the end of `vggnet bench --help`
EXAMPLES = (
    "vggnet bench --only inference",
    "vggnet bench --only engines --out engines.json",
    "vggnet bench --only inference --run runs/cifar10_quick --out bench.json",
)


def register(sub) -> None:
    p = sub.add_parser("bench", help="CPU benchmarks against torchvision baselines (ratios), "
                                     "every inference backend side by side")
    p.add_argument("--data-root", help="where cifar10 lives")
    p.add_argument("--run", help="a finished CIFAR run: each reduced precision's top-1 "
                                 "agreement with fp32, and the time to 85%%")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 models")
    p.add_argument("--only", choices=["training", "inference", "engines"],
                   help="run one of the benchmarks (default: all): the training step, every "
                        "inference backend on VGG-16, or the PyTorch engines (vggnet's, "
                        "torch.compile's) against OpenVINO on VGG-16 and VGG-16-BN")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..bench import run_all

    run_all(out=args.out, data_root=args.data_root, quick_run=args.run, skip_int8=args.no_int8,
            only=args.only)
