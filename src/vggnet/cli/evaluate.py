"""`vggnet evaluate`: top-1/top-5, per-class accuracy and the confusion matrix of a run,
under any of the paper's test protocols (the library's :func:`evaluate_run`)."""

from __future__ import annotations

import json
from pathlib import Path


NAME = "evaluate"
# shown at the end of `vggnet evaluate --help`
EXAMPLES = (
    "vggnet evaluate runs/photos",
    "vggnet evaluate runs/imagenette_quick --protocol dense --scales 96 112 128 --flip",
    "vggnet evaluate runs/photos --data other_photos/ --json",
)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5, per-class accuracy and confusion matrix")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", help="where cifar10/cifar100 live")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="which split to evaluate (default test)")
    p.add_argument("--limit", type=int, help="evaluate on this many images (class-stratified)")
    p.add_argument("--image-size", type=int, help="resize --data images to this first")
    p.add_argument("--batch-size", type=int, default=250, help="images per batch (default 250)")
    p.add_argument("--protocol", default="single",
                   choices=["single", "dense", "multicrop", "dense+multicrop"],
                   help="the paper's test protocols (Section 3.2); default single (centre crop)")
    p.add_argument("--scales", type=int, nargs="+", metavar="Q",
                   help="test scales Q (shorter side); default: the checkpoint's test scale")
    p.add_argument("--grid", type=int, default=5, help="multicrop: grid x grid crops per scale")
    p.add_argument("--flip", action="store_true",
                   help="also average over horizontally flipped images")
    p.add_argument("--tta-shift", type=int, default=0, metavar="N",
                   help="single protocol: also average over the crop translated by +-N pixels "
                        "(as `train --tta-shift`)")
    p.add_argument("--stream", action="store_true",
                   help="read an ImageFolder tree image by image (ImageNet); automatic for "
                        "checkpoints trained with --stream")
    p.add_argument("--workers", type=int, default=4, help="decoding processes with --stream")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 on a GPU and on CPUs with AVX512-BF16 or AMX, "
                        "fp32 elsewhere")
    p.add_argument("--out", help="folder for evaluation.json and confusion.png (default: the run)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..evaluation.report import EvalOptions, evaluate_run, format_report, write_report

    opts = EvalOptions(protocol=args.protocol, scales=args.scales, grid=args.grid,
                       flip=args.flip, tta_shift=args.tta_shift, split=args.split,
                       data=args.data, data_root=args.data_root, image_size=args.image_size,
                       limit=args.limit, stream=args.stream, workers=args.workers,
                       batch_size=args.batch_size, device=args.device, precision=args.precision)
    report = evaluate_run(args.checkpoint, opts)
    out = Path(args.out) if args.out else Path(report["checkpoint"]).parent
    json_path, png = write_report(report, out)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "confusion"}, indent=2))
        return
    print(format_report(report))
    print(f"report: {json_path}; confusion matrix: {png}")
