"""`vggnet models`: the registered models with their paper configuration and parameters."""

from __future__ import annotations


NAME = "models"
# shown at the end of `vggnet models --help`
EXAMPLES = (
    "vggnet models",
    "vggnet models vgg16*",
)


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with parameter counts and which have ImageNet weights")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. '*_bn'")
    p.set_defaults(func=run)


def run(args) -> None:
    import torch

    from ..models import PAPER_CONFIG, create_model, list_models
    from ..models.hub import URLS

    print(f"{'model':<14} {'paper':<6} {'parameters':>13}  ImageNet weights (--weights)")
    for name in list_models(args.pattern):
        with torch.device("meta"):
            n = sum(p.numel() for p in create_model(name).parameters())
        weights = f"imagenet, {name}.tv_in1k" if name in URLS else "-"
        print(f"{name:<14} {PAPER_CONFIG.get(name, '-'):<6} {n:>13,}  {weights}")
