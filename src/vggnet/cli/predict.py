"""`vggnet predict`: classify image files and folders with a run's checkpoint."""

from __future__ import annotations

import json
import sys

from ..errors import UsageError


def add_backend_arguments(p) -> None:
    """--backend and --precision, shared by predict and serve."""
    from ..inference.names import BACKENDS, backend_help

    p.add_argument("--backend", choices=BACKENDS, default="auto", help=backend_help())
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="for the torch and openvino backends: auto (default: bf16 on CPUs "
                        "with AVX512-BF16 or AMX and on GPUs, fp32 elsewhere), fp32, bf16")
    p.add_argument("--threads", type=int,
                   help="inference threads (default: all cores; serve --workers N: the cores / N)")


NAME = "predict"
# shown at the end of `vggnet predict --help`
EXAMPLES = (
    "vggnet predict runs/photos IMG_0001.jpg holiday/ --top-k 3",
    "vggnet predict runs/photos photos/ --json > answers.json",
    "vggnet predict runs/photos photos/ --backend torch --precision fp32",
)


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained checkpoint")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    add_backend_arguments(p)
    p.add_argument("--onnx", help="run this exported file instead: an .onnx in ONNX Runtime "
                                  "(e.g. the best.int8.onnx of `vggnet export --int8`), an "
                                  "OpenVINO .xml, or a .pt2 of `vggnet export --format pt2` "
                                  "or `aoti`")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..device import pick_device
    from ..io import find_images
    from ..predict import Predictor

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, not {args.threads}")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {args.top_k}")
    paths = find_images(args.images)  # a bad path is said before the model is loaded
    predictor = Predictor(args.checkpoint, device=pick_device(args.device), onnx=args.onnx,
                          backend=args.backend, precision=args.precision, threads=args.threads)
    print(f"vggnet predict: {predictor.describe()}", file=sys.stderr)
    results = predictor.predict(paths, top_k=args.top_k)
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
