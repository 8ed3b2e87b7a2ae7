"""Per-epoch top-1 of the imagenette_vgg16_bn recipe's versions, in one picture for the docs (docs/results.md).

    python benchmarks/plot_imagenette_curves.py --out docs/imagenette_vgg16_bn_curves.png

Reads the result files that ``benchmarks/recipe_result.py`` wrote for each version (the
per-epoch check on 1,000 class-stratified val photos), draws top-1 against the epoch and
against the fraction of the one-cycle schedule, and marks each version's final dense figure
(all 3,925 val photos, Q = 128, 160, 192 or the version's scales, with flips). The checks of
versions with ``tta = false`` are scored without flips, which the legend says.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = ("imagenette_vgg16_bn_112px.json", "imagenette_vgg16_bn_32ep.json",
           "imagenette_vgg16_bn_48ep.json", "imagenette_vgg16_bn.json")


def _label(result: dict) -> str:
    recipe = result["recipe"]
    parts = [f"{result['epochs']} ep", f"{recipe['crop_size']} px"]
    parts += [f"cutout {recipe['cutout']}"] if recipe.get("cutout") else []
    parts += [f"mixup {recipe['mixup']}"] if recipe.get("mixup") else []
    parts += [f"cutmix {recipe['cutmix']}"] if recipe.get("cutmix") else []
    check = "check with flips" if recipe.get("tta", True) else "check without flips"
    return f"{', '.join(parts)} ({check}; {result['train_minutes']:.0f} min)"


def _dense(result: dict) -> float | None:
    top1 = [e["top1"] for e in result["evaluations"] if e["protocol"] == "dense"]
    return 100 * top1[0] if top1 else None


def plot(results: list[dict], out: Path) -> Path:
    from vggnet.evaluation.report import pyplot

    plt = pyplot()
    fig, (by_epoch, by_fraction) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for result in results:
        top1 = [100 * v for v in result["top1_per_epoch"]]
        epochs = list(range(1, len(top1) + 1))
        line, = by_epoch.plot(epochs, top1, label=_label(result))
        by_fraction.plot([e / len(top1) for e in epochs], top1, color=line.get_color())
        dense = _dense(result)
        if dense is not None:
            by_epoch.plot([len(top1)], [dense], "*", markersize=11, color=line.get_color())
            by_fraction.plot([1.0], [dense], "*", markersize=11, color=line.get_color())
    for ax, xlabel in ((by_epoch, "epoch"), (by_fraction, "fraction of the schedule")):
        ax.axhline(93, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    by_epoch.set_ylim(80, 95)
    by_epoch.set_ylabel("top-1 (%) on the per-epoch check (1,000 val photos)")
    by_epoch.legend(fontsize=7.5, loc="lower right")
    fig.suptitle("imagenette_vgg16_bn versions: per-epoch check; star = final dense evaluation "
                 "on all 3,925 val photos; dashed = the 93% goal", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", default=[str(HERE / "results" / f) for f in DEFAULT],
                    help="result files of benchmarks/recipe_result.py (default: the versions "
                         "kept in benchmarks/results)")
    ap.add_argument("--out", default="docs/imagenette_vgg16_bn_curves.png")
    args = ap.parse_args()
    results = [json.loads(Path(f).read_text()) for f in args.results if Path(f).is_file()]
    if not results:
        raise SystemExit(f"none of {args.results} exists: run benchmarks/recipe_result.py first")
    print(plot(results, Path(args.out)))


if __name__ == "__main__":
    main()
