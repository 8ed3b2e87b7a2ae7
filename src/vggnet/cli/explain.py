"""`vggnet explain`: Grad-CAM heatmaps of a run's model on image files."""

from __future__ import annotations

import sys


NAME = "explain"
# shown at the end of `vggnet explain --help`
EXAMPLES = (
    "vggnet explain runs/photos IMG_0001.jpg --out explain/",
    "vggnet explain runs/photos photos/cat/ --out explain/",
)


def register(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM: where the network looks, per image")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--layer", help="feature map by its paper name, e.g. conv5_3 (before the "
                                   "ReLU) or relu5_3 (after); default: the last conv block's "
                                   "ReLU, as in the Grad-CAM paper")
    p.add_argument("--class", dest="class_name",
                   help="explain this class (default: each image's top class)")
    p.add_argument("--method", choices=["gradcam", "gradcam++"], default="gradcam",
                   help="gradcam (default) or gradcam++")
    p.add_argument("--out", default="explain", help="output folder (default ./explain)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 on a GPU and on CPUs with AVX512-BF16 or AMX, "
                        "fp32 elsewhere")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..features.explain import Explainer
    from ..io import find_images

    explainer = Explainer(args.checkpoint, device=args.device, layer=args.layer,
                          method=args.method, precision=args.precision)
    results = explainer.explain_files(find_images(args.images), args.out, args.class_name)
    for r in results:
        if r.error:
            print(f"vggnet explain: error: {r.error}", file=sys.stderr)
        else:
            print(f"{r.path}: {r.class_name} ({100 * r.probability:.1f}%) at {r.layer} -> "
                  f"{r.png} (+ raw map {r.npy.name})")
    if any(r.error for r in results):
        args.exit_code = 1
