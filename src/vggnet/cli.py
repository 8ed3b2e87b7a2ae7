"""The `vggnet` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys


from .commands import CLIError, register_commands


def _cmd_models(args) -> None:
    from .models import PAPER_CONFIG, create_model, list_models
    import torch

    print(f"{'model':<14} {'paper':<6} {'parameters':>13}")
    for name in list_models(args.pattern):
        with torch.device("meta"):
            n = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<14} {PAPER_CONFIG.get(name, '-'):<6} {n:>13,}")


def _model_options(args) -> dict:
    opts = {"num_classes": args.num_classes, "width": args.width, "head": args.head,
            "in_channels": args.in_channels}
    return {k: v for k, v in opts.items() if v is not None}


def _cmd_summary(args) -> None:
    from .models import create_model, summarize

    size = args.input_size
    model = create_model(args.model, **_model_options(args))
    print(summarize(model, tuple(size) if len(size) == 2 else size[0]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggnet", description="VGG networks (Simonyan & Zisserman, 2014): train, "
        "evaluate, predict, inspect and export.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered models with parameter counts")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. '*_bn'")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive field")
    p.add_argument("model", help="model name (see `vggnet models`)")
    p.add_argument("--input-size", type=int, nargs="+", default=[224], metavar="N",
                   help="input size: one number for square inputs, or H W (default 224)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("--width", type=float, help="channel multiplier (1.0 is the paper's)")
    p.add_argument("--head", choices=["classifier", "conv", "linear"])
    p.set_defaults(func=_cmd_summary)

    register_commands(sub)  # train, evaluate, predict, samples, ...
    return parser


def main(argv: list[str] | None = None) -> int:
    from .models import UnknownModelError, WeightsError

    from .data import DataError
    from .engine.config import ConfigError
    from .engine.train import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    try:
        args.func(args)
    except (CLIError, UnknownModelError, WeightsError, DataError, ConfigError, TrainingError,
            FileNotFoundError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"vggnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vggnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return getattr(args, "exit_code", 0)


if __name__ == "__main__":
    sys.exit(main())
