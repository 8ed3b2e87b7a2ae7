"""`vggnet predict`: classify image files and folders with a run's checkpoint."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained checkpoint")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--onnx", help="run this exported model in ONNX Runtime (e.g. the "
                                  "best.int8.onnx of `vggnet export --int8`)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..device import pick_device
    from ..io import find_images
    from ..predict import Predictor

    predictor = Predictor(args.checkpoint, device=pick_device(args.device), onnx=args.onnx)
    results = predictor.predict(find_images(args.images), top_k=args.top_k)
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([{"path": r.path, "error": r.error} if r.error else
                          {"path": r.path, "top": [{"class": c, "probability": round(p, 6)}
                                                   for c, p in r.top]} for r in results], indent=2))
    else:
        for r in results:
            if not r.error:
                print(f"{r.path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top))
    for r in failed:
        print(f"vggnet predict: error: {r.error}", file=sys.stderr)
    if failed:
        args.exit_code = 1
