"""`vggnet stylize`: neural style transfer (Gatys et al.) with VGG-19 by paper layer names."""

from __future__ import annotations

from pathlib import Path


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


NAME = "stylize"
# shown at the end of `vggnet stylize --help`
EXAMPLES = (
    "vggnet stylize content.jpg style.jpg --out styled.png",
    "vggnet stylize content.jpg style1.jpg style2.jpg --out blend.png",
)


def register(sub) -> None:
    p = sub.add_parser("stylize", help="neural style transfer (Gatys et al. 2016)")
    p.add_argument("content", help="the content image")
    p.add_argument("styles", nargs="+", help="one or more style images")
    p.add_argument("--out", required=True, help="the result (PNG); a sheet of content, "
                                                "style(s) and result goes beside it")
    p.add_argument("--weights", default="imagenet",
                   help="backbone: 'imagenet' (published VGG weights, downloaded once and "
                        "checked), a vggnet run (folder or checkpoint), or a weights file")
    p.add_argument("--arch", default="vgg19", help="architecture for 'imagenet' or a weights "
                                                   "file (default vgg19, the paper's)")
    p.add_argument("--size", type=int, default=512, help="longer side of the result (default 512)")
    p.add_argument("--scales", help="coarse to fine: longer sides solved in turn, e.g. "
                                    "256,512 (default: --size only)")
    p.add_argument("--steps", type=int, default=300, help="loss evaluations per scale")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs",
                   help="lbfgs (default, as in Gatys et al.) or adam (its step: --lr)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam's step (default 0.02)")
    p.add_argument("--content-weight", type=float, default=1.0,
                   help="weight of the content loss (default 1)")
    p.add_argument("--style-weight", type=float, default=1e6,
                   help="weight of the style loss (default 1e6); larger: more style")
    p.add_argument("--tv-weight", type=float, default=0.0, help="total variation (smoothing)")
    p.add_argument("--blend", help="weights of the style images, e.g. 0.7,0.3 (default equal)")
    p.add_argument("--style-scale", type=float, default=1.0,
                   help="style image size relative to the result (default 1)")
    p.add_argument("--content-layer", default="relu4_2",
                   help="the layer whose features the result keeps from the content image "
                        "(default relu4_2, the paper's)")
    p.add_argument("--style-layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
                   help="comma-separated, each optionally NAME:WEIGHT (default: the paper's "
                        "five, weight 1/5 each)")
    p.add_argument("--pooling", choices=["avg", "max"], default="avg",
                   help="avg (the paper's choice for synthesis, default) or max")
    p.add_argument("--init", choices=["content", "noise"], default="content",
                   help="start from the content image (default) or from noise")
    p.add_argument("--preserve-colors", action="store_true",
                   help="keep the content's colours (luminance-only transfer)")
    p.add_argument("--input-norm", choices=["torchvision", "caffe"],
                   help="override the backbone's preprocessing (default: its own)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 on a GPU and on CPUs with native bf16 "
                        "(AVX512-BF16, AMX), fp32 elsewhere")
    p.add_argument("--fp32-steps", type=int, default=0,
                   help="with bf16: run the last N loss evaluations of each scale in fp32, "
                        "so that the result's loss is fp32's at most of bf16's speed")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise start (default 0)")
    p.set_defaults(func=run)


def style_layers(text: str) -> dict[str, float]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    out = {}
    for t in names:
        name, _, w = t.partition(":")
        out[name] = float(w) if w else 1.0 / len(names)
    return out


def run(args) -> None:
    from ..errors import ConfigError
    from ..features.perceptual import load_backbone
    from ..features.style import StyleOptions, load_image, sheet, stylize, to_pil
    from ..io import atomic_write

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: write the result as a .png file")
    opts = StyleOptions(content_layer=args.content_layer, style_layers=style_layers(args.style_layers),
                        content_weight=args.content_weight, style_weight=args.style_weight,
                        tv_weight=args.tv_weight, steps=args.steps, optimizer=args.optimizer,
                        lr=args.lr, pooling=args.pooling, init=args.init,
                        preserve_colors=args.preserve_colors, seed=args.seed,
                        precision=args.precision, fp32_steps=args.fp32_steps)
    opts.check()  # a bad option fails before any image or weight is read
    sizes = [int(v) for v in _floats(args.scales)] if args.scales else [args.size]
    if min(sizes) < 1:
        raise ConfigError(f"{'--scales' if args.scales else '--size'} takes the result's longer "
                          f"side in pixels, 1 or more; got {min(sizes)}")
    if args.style_scale <= 0:
        raise ConfigError(f"--style-scale is the style images' size relative to the result, "
                          f"more than 0; got {args.style_scale}")
    content = load_image(args.content, max(sizes))
    styles = [load_image(s, round(max(sizes) * max(args.style_scale, 1.0))) for s in args.styles]
    backbone = load_backbone(args.weights, args.arch).to(args.device)
    result, terms = stylize(backbone, content.to(args.device),
                            [s.to(args.device) for s in styles],
                            blend=_floats(args.blend) if args.blend else None, sizes=sizes,
                            style_scale=args.style_scale, opts=opts, norm=args.input_norm,
                            progress=True)
    image = to_pil(result)
    atomic_write(out, lambda p: image.save(p, format="PNG"))
    sheet_path = out.with_name(out.stem + "_sheet.png")
    pictures = [to_pil(content), *[to_pil(s) for s in styles], image]
    atomic_write(sheet_path, lambda p: sheet(pictures).save(p, format="PNG"))
    print(f"{out} ({image.size[0]}x{image.size[1]}, loss {terms['loss']:.4g}: content "
          f"{terms['content']:.4g}, style {terms['style']:.4g}); sheet {sheet_path}")
