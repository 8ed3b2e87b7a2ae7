"""`vggnet train`: a recipe (packaged or a file), overridden by flags."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError


NAME, HELP = "train", "train a VGG on an image data set"
HEAVY = True  # its options come from the training configuration, which loads PyTorch


# shown at the end of `vggnet train --help`
EXAMPLES = (
    "vggnet train --data photos/ --weights imagenet --out runs/photos",
    "vggnet train --config cifar10_quick --epochs 5 --out runs/short",
    "vggnet train --out runs/photos --resume",
)


def register(sub) -> None:
    from ..training.config import add_flags

    p = sub.add_parser(NAME, help=HELP,
                       description="Train a VGG. A recipe (--config: a packaged recipe's name "
                       "from `vggnet recipes`, or a TOML file) sets defaults; every flag below "
                       "overrides it. Booleans take true/false.")
    p.add_argument("--config", help="recipe: a packaged name such as cifar10_quick, or a "
                                    "TOML file")
    add_flags(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..training.config import flags_to_overrides, resolve
    from ..training.loop import train

    overrides = flags_to_overrides(args)
    recipe = args.config
    resume = str(overrides.get("resume", "false")).lower() in ("true", "1", "yes")
    if resume and recipe is None:
        out = Path(overrides.get("out") or "runs/train")
        saved = out / "config.json"
        if not saved.is_file():
            raise UsageError(f"--resume: {saved} not found; is {out} a vggnet run directory?")
        recipe = _data_found_from_here(json.loads(saved.read_text()), out)  # the run's own
    result = train(resolve(recipe, overrides))
    if not result.main:  # under torchrun, rank 0 alone speaks
        return
    state = "stopped early" if result.interrupted else "done"
    print(f"{state}: best test top-1 {100 * result.best_top1:.2f}% after "
          f"{len(result.history)} epochs; checkpoints in {result.out}")


def _data_found_from_here(config: dict, out: Path) -> dict:
    """A resumed run's configuration with its data paths as the run resolved them when it
    trained, where the paths it was given (maybe relative to another directory) do not
    resolve from here (:func:`vggnet.run.usable_path`)."""
    from ..run import usable_path

    meta = out / "last.json"
    data = (json.loads(meta.read_text()).get("data") or {}) if meta.is_file() else {}
    return {**config, "data": usable_path(config.get("data"), data.get("source_path")),
            "data_root": usable_path(config.get("data_root"), data.get("root"))}
