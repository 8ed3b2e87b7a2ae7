"""`vggnet bench`: CPU benchmarks against named baselines, reported as ratios."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="CPU benchmarks against torchvision baselines (ratios)")
    p.add_argument("--data-root", help="where cifar10 lives")
    p.add_argument("--run", help="a finished CIFAR run: int8 agreement and time to 85%%")
    p.add_argument("--no-int8", action="store_true", help="skip the ONNX Runtime int8 part")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..bench import run_all

    run_all(out=args.out, data_root=args.data_root, quick_run=args.run, skip_int8=args.no_int8)
