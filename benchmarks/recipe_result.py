"""Summarise a finished run for benchmarks/RESULTS.md: its recipe, training time, per-epoch
top-1, and the evaluations written next to it (``vggnet evaluate RUN [--out DIR]``).

    python benchmarks/recipe_result.py runs/imagenette_quick runs/imagenette_quick/dense \\
        --out benchmarks/results/imagenette_quick.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from vggnet.bench import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("evaluations", nargs="*", help="folders holding more evaluation.json files")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run = Path(args.run)
    best = json.loads((run / "best.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    evals = []
    for folder in [run, *map(Path, args.evaluations)]:
        f = folder / "evaluation.json"
        if f.is_file():
            e = json.loads(f.read_text())
            evals.append({k: e[k] for k in ("protocol", "scales", "flip", "images", "top1",
                                            "top5")})
    result = {"environment": environment(), "run": str(run), "recipe": best["config"],
              "data": best["data"], "epochs": len(epochs),
              "train_minutes": round(sum(e["train_seconds"] for e in epochs) / 60, 1),
              "eval_minutes": round(sum(e["eval_seconds"] for e in epochs) / 60, 1),
              "top1_per_epoch": [round(e["test_top1"], 4) for e in epochs],
              "best_top1": round(best["metrics"]["test_top1"], 4), "evaluations": evals}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "recipe"}, indent=2))


if __name__ == "__main__":
    main()
