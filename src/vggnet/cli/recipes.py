"""`vggnet recipes`: the training recipes shipped inside the package."""

from __future__ import annotations


NAME = "recipes"
# shown at the end of `vggnet recipes --help`
EXAMPLES = (
    "vggnet recipes",
    "vggnet recipes finetune",
)


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the packaged training recipes (use them with "
                                       "`vggnet train --config NAME`)")
    p.add_argument("name", nargs="?", help="print this recipe's file")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..training.config import find_recipe, list_recipes

    if args.name:
        print(find_recipe(args.name).read_text(), end="")
        return
    for name, path in list_recipes().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("#")), "")
        print(f"{name:<28} {first}")
