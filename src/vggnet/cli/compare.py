"""`vggnet compare`: the LPIPS perceptual distance between two images."""

from __future__ import annotations


NAME = "compare"
# shown at the end of `vggnet compare --help`
EXAMPLES = (
    "vggnet compare a.jpg b.jpg",
    "vggnet compare a.jpg b.jpg --per-layer",
)


def register(sub) -> None:
    p = sub.add_parser("compare", help="LPIPS perceptual distance between two images")
    p.add_argument("first", help="an image file")
    p.add_argument("second", help="an image file (resized to the first's size if it differs)")
    p.add_argument("--weights", default="imagenet",
                   help="VGG-16 backbone: 'imagenet' (torchvision's published weights, the "
                        "ones LPIPS is calibrated on; downloaded once) or a weights file")
    p.add_argument("--lpips-weights",
                   help="LPIPS v0.1 vgg.pth calibration (default: from the installed lpips "
                        "package)")
    p.add_argument("--per-layer", action="store_true", help="also print each layer's share")
    p.set_defaults(func=run)


def run(args) -> None:
    import numpy as np
    import torch

    from ..features.perceptual import LPIPS, LPIPS_LAYERS
    from ..io import open_image

    a, b = open_image(args.first), open_image(args.second)
    note = ""
    if b.size != a.size:
        from PIL import Image

        note = f" ({args.second} resized from {b.size[0]}x{b.size[1]} to {a.size[0]}x{a.size[1]})"
        b = b.resize(a.size, Image.BILINEAR)

    def tensor(im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    metric = LPIPS(args.weights, args.lpips_weights)
    with torch.inference_mode():
        total, layers = metric(tensor(a), tensor(b), per_layer=True)
    print(f"LPIPS {float(total):.6f}{note}")
    if args.per_layer:
        for name, v in zip(LPIPS_LAYERS, layers):
            print(f"  {name}: {float(v):.6f}")
