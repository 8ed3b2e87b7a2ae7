"""`vggnet features`: a grid of each layer's strongest channels, or pooled embeddings."""

from __future__ import annotations

import sys

from ..errors import UsageError


NAME = "features"
# shown at the end of `vggnet features --help`
EXAMPLES = (
    "vggnet features runs/photos IMG_0001.jpg --out maps.png",
    "vggnet features runs/photos photos/ --embed --out embeddings.npy",
)


def register(sub) -> None:
    p = sub.add_parser("features", help="feature maps of one image as a grid, or --embed "
                                        "many images as vectors for retrieval")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="one image (grid), or files and folders (--embed)")
    p.add_argument("--layers", default=None,
                   help="comma-separated paper names (default: the first, middle and last "
                        "conv blocks' last ReLU, e.g. relu1_2,relu3_3,relu5_3 on VGG-16)")
    p.add_argument("--top", type=int, default=8, help="channels shown per layer (default 8)")
    p.add_argument("--embed", action="store_true",
                   help="write globally average-pooled, L2-normalised vectors of the last "
                        "--layers entry (default: the last conv block's ReLU) for every "
                        "image: OUT.npy and the file list OUT.txt")
    p.add_argument("--out", help="grid PNG (default features.png) or embeddings .npy "
                                 "(default embeddings.npy)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (bf16 on a GPU and on CPUs with AVX512-BF16 or AMX, else fp32)")
    p.set_defaults(func=run)


def _default_layers(model) -> list[str]:
    from torch import nn

    relus = [n for n, m in model.features.named_children() if isinstance(m, nn.ReLU)]
    blocks = {}
    for n in relus:  # last ReLU of each block: relu{block}_{i}
        blocks[n.split("_")[0]] = n
    last = list(blocks.values())
    return [last[0], last[len(last) // 2], last[-1]] if len(last) >= 3 else last


def run(args) -> None:
    from ..features.maps import FeatureExtractor, save_embeddings
    from ..io import find_images

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, not {args.top}")
    fx = FeatureExtractor(args.checkpoint, device=args.device, precision=args.precision)
    layers = ([n.strip() for n in args.layers.split(",") if n.strip()] if args.layers
              else _default_layers(fx.model))
    if args.embed:
        vectors, kept, errors = fx.embed(find_images(args.images), layers[-1])
        for path, err in errors:
            print(f"vggnet features: error: {err}", file=sys.stderr)
        if not kept:
            raise UsageError("no image could be read; nothing to embed")
        out, listing = save_embeddings(args.out or "embeddings.npy", vectors, kept)
        print(f"wrote {out} ({vectors.shape[0]} x {vectors.shape[1]}, {layers[-1]} pooled) "
              f"and {listing}")
        if errors:
            args.exit_code = 1
        return
    if len(args.images) != 1:
        raise UsageError(f"a feature grid shows one image, not {len(args.images)}: give one, "
                         "or add --embed for vectors of many")
    sheet = fx.grid(args.images[0], layers, args.top)
    out = args.out or "features.png"
    sheet.save(out)
    print(f"wrote {out} ({', '.join(layers)}: the {args.top} strongest channels each)")
