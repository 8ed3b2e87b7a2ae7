"""`vggnet samples`: write a few test images of a data set as PNG files."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


NAME = "samples"
# shown at the end of `vggnet samples --help`
EXAMPLES = (
    "vggnet samples digits --out samples --count 4",
    "vggnet samples cifar10 --out samples --count 8",
)


def register(sub) -> None:
    p = sub.add_parser("samples", help="write a few test images of a data set as PNG files")
    p.add_argument("data", help="cifar10, cifar100, digits or an ImageFolder path")
    p.add_argument("--data-root", help="where cifar10/cifar100 live")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--count", type=int, default=8, help="how many images (default 8)")
    p.set_defaults(func=run)


def run(args) -> None:
    from PIL import Image

    from ..data import load_splits

    if args.count < 1:
        raise UsageError(f"--count must be at least 1, not {args.count}")
    _, test = load_splits(args.data, root=args.data_root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = test.subset(args.count, seed=1)
    for i in range(len(data)):
        arr = data.images[i].permute(1, 2, 0).numpy()
        name = f"{i:03d}_{data.classes[int(data.labels[i])]}.png"
        big = (arr.shape[1] * 4, arr.shape[0] * 4)  # small images, enlarged to be seen
        Image.fromarray(arr).resize(big, Image.NEAREST).save(out / name)
    print(f"wrote {len(data)} test images to {out}")
