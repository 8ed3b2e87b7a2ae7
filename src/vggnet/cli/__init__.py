"""The `vggnet` command: one thin module per sub-command, each parsing its arguments and
calling the library.

Errors that mean bad input (:class:`vggnet.errors.VggnetError`) are printed as one line;
anything else is a bug and keeps its traceback. ``-v`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import VggnetError
from ..version import __version__
from . import (bench, compare, evaluate, explain, export, features, models, predict, recipes,
               samples, serve, stylize, summary, train)

COMMANDS = (models, summary, recipes, train, evaluate, predict, explain, features, compare, stylize,
            samples, export, bench, serve)
# the commands that run a network: their process keeps freed activations for reuse
RUN_NETWORKS = {"train", "evaluate", "predict", "explain", "features", "compare", "stylize",
                "export", "bench", "serve"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser. With ``only`` (the sub-command about to run, or "" for none), a
    sub-command whose options take PyTorch to describe (``HEAVY``: train's come from the
    training configuration) is built in full only if it is ``only``, and otherwise listed by
    name and help alone: ``vggnet --help``, ``--version``, a mistyped command and every light
    sub-command's own ``--help`` then answer without loading PyTorch."""
    parser = argparse.ArgumentParser(
        prog="vggnet", description="VGG networks (Simonyan & Zisserman, 2014): train, "
        "evaluate, predict, explain, inspect, export and serve.")
    parser.add_argument("--version", action="version", version=f"vggnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log more detail, and show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if getattr(command, "HEAVY", False) and only is not None and only != command.NAME:
            sub.add_parser(command.NAME, help=command.HELP)
        else:
            command.register(sub)
            _add_examples(sub.choices[command.NAME], command.EXAMPLES)
    return parser


def _add_examples(parser: argparse.ArgumentParser, examples: tuple[str, ...]) -> None:
    """End a sub-command's --help with its examples, kept as written (argparse would rewrap
    them into one paragraph)."""
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _command_in(argv: list[str]) -> str:
    """The sub-command named in ``argv`` ("" if none): the first argument that is not an
    option (the command's own options, ``-v`` and ``--version``, take no value)."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    try:
        if args.command in RUN_NETWORKS:
            from ..device import reuse_freed_memory

            reuse_freed_memory()  # this process is vggnet's own: tune its allocator
        args.func(args)
    except VggnetError as exc:
        if args.verbose:
            raise
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
