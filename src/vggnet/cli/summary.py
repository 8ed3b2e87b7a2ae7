"""`vggnet summary`: per-layer shapes, parameters, MACs and receptive field."""

from __future__ import annotations

from ..errors import UsageError


NAME = "summary"
# shown at the end of `vggnet summary --help`
EXAMPLES = (
    "vggnet summary vgg16",
    "vggnet summary vgg16_bn --input-size 32",
)


def register(sub) -> None:
    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive field")
    p.add_argument("model", help="model name (see `vggnet models`)")
    p.add_argument("--input-size", type=int, nargs="+", default=[224], metavar="N",
                   help="input size: one number for square inputs, or H W (default 224)")
    p.add_argument("--num-classes", type=int, help="classes of the last layer (default 1000)")
    p.add_argument("--in-channels", type=int, help="input channels (default 3)")
    p.add_argument("--width", type=float, help="channel multiplier (1.0 is the paper's)")
    p.add_argument("--head", choices=["classifier", "conv", "linear"], help="the head's kind")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..models import create_model, summarize

    options = {"num_classes": args.num_classes, "width": args.width, "head": args.head,
               "in_channels": args.in_channels}
    model = create_model(args.model, **{k: v for k, v in options.items() if v is not None})
    size = args.input_size
    if len(size) > 2:
        raise UsageError(f"--input-size takes one number (a square input) or two (H W), not "
                         f"{len(size)}: {' '.join(map(str, size))}")
    print(summarize(model, tuple(size) if len(size) == 2 else size[0]))
