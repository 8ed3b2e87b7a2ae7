"""The sub-commands train, evaluate, predict and samples (registered into the CLI)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vggnet")


class CLIError(Exception):
    """An error to print as one line, without a traceback."""


# --- train ----------------------------------------------------------------------------------

def _cmd_train(args) -> None:
    from .engine.config import flags_to_overrides, resolve
    from .engine.train import train

    overrides = flags_to_overrides(args)
    recipe = args.config
    resume = str(overrides.get("resume", "false")).lower() in ("true", "1", "yes")
    if resume and recipe is None:
        out = Path(overrides.get("out") or "runs/train")
        saved = out / "config.json"
        if not saved.is_file():
            raise CLIError(f"--resume: {saved} not found; is {out} a vggnet run directory?")
        recipe = json.loads(saved.read_text())  # the run's own resolved config
    cfg = resolve(recipe, overrides)
    result = train(cfg)
    best = 100 * result.best_top1
    state = "stopped early" if result.interrupted else "done"
    print(f"{state}: best test top-1 {best:.2f}% after {len(result.history)} epochs; "
          f"checkpoints in {result.out}")


def _register_train(sub) -> None:
    from .engine.config import add_flags

    p = sub.add_parser("train", help="train a VGG on an image data set",
                       description="Train a VGG. A recipe file (--config) sets defaults; every "
                       "flag below overrides it. Booleans take true/false.")
    p.add_argument("--config", help="recipe file (TOML), e.g. configs/cifar10_quick.toml")
    add_flags(p)
    p.set_defaults(func=_cmd_train)


# --- evaluate -------------------------------------------------------------------------------

def _cmd_evaluate(args) -> None:
    from .data import load_splits
    from .engine.checkpoint import load_checkpoint, resolve_checkpoint, write_json
    from .engine.plots import plot_confusion
    from .engine.train import autocast_for, pick_device
    from .evaluation.protocols import evaluate_protocol, evaluate_protocol_folder

    device = pick_device(args.device)
    ckpt = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(ckpt, device=device)
    cfg = meta.get("config", {})
    pre = meta["preprocessing"]
    source = args.data or cfg.get("data")
    if not source:
        raise CLIError("no data set recorded in the checkpoint: pass --data")
    crop = int(pre["input_size"])
    scales = args.scales or [int(pre.get("test_scale", crop))]
    if args.tta_shift < 0 or (args.tta_shift and args.protocol != "single"):
        raise CLIError(f"--tta-shift {args.tta_shift}: a shift of 0 or more pixels, with the "
                       f"single protocol only (got --protocol {args.protocol})")
    common = dict(protocol=args.protocol, scales=scales, crop=crop, flip=args.flip,
                  grid=args.grid, mean=pre["mean"], std=pre["std"], device=device,
                  autocast=autocast_for(device, args.precision), shift=args.tta_shift)
    classes = meta.get("classes")
    if args.stream or (cfg.get("stream") and not args.data):
        # an ImageFolder tree too large for memory (ImageNet): image by image, whole images
        from .data.stream import stream_splits

        folder = stream_splits(source)[0 if args.split == "train" else 1]
        # the class folders alone: listing every image of ImageNet's val/ twice is slow
        data_classes = sorted(d.name for d in folder.iterdir()
                              if d.is_dir() and not d.name.startswith("."))
        if classes and data_classes != classes:
            raise CLIError(f"the classes of {folder} {data_classes[:5]}... differ from the "
                           f"checkpoint's {classes[:5]}...")
        result = evaluate_protocol_folder(model, folder, workers=args.workers, limit=args.limit,
                                          **common)
    else:
        root = args.data_root or cfg.get("data_root")
        image_size = cfg.get("image_size") if not args.data else args.image_size
        train_set, test_set = load_splits(source, root=root, image_size=image_size,
                                          val_fraction=cfg.get("val_fraction", 0.1),
                                          seed=cfg.get("seed", 0))
        data = train_set if args.split == "train" else test_set
        data_classes = data.classes
        if classes and data.classes != classes:
            raise CLIError(f"the data's classes {data.classes[:5]}... differ from the "
                           f"checkpoint's {classes[:5]}...: evaluate on data with the same "
                           "class folders")
        if args.limit:
            data = data.subset(args.limit)
        result = evaluate_protocol(model, data.images, data.labels, batch_size=args.batch_size,
                                   **common)
    out = Path(args.out) if args.out else ckpt.parent
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(ckpt), "data": str(source), "split": args.split,
              "images": result["n"], "protocol": args.protocol, "scales": scales,
              "flip": args.flip, "tta_shift": args.tta_shift, "top1": result["top1"],
              "top5": result["top5"],
              "loss": result["loss"], "per_class": dict(zip(data_classes, result["per_class"])),
              "confusion": result["confusion"], "classes": data_classes}
    write_json(out / "evaluation.json", report)
    plot_confusion(result["confusion"], data_classes, out / "confusion.png",
                   title=f"{model.arch} on {Path(str(source)).name} ({args.split}): "
                         f"top-1 {100 * result['top1']:.2f}%")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "confusion"}, indent=2))
        return
    views = (f"{args.protocol}, Q={','.join(map(str, scales))}{', flip' if args.flip else ''}"
             f"{f', shift {args.tta_shift}' if args.tta_shift else ''}")
    print(f"{model.arch} on {source} ({args.split}, {result['n']} images, {views}): "
          f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
          f"loss {result['loss']:.4f}")
    width = max(len(c) for c in data_classes)
    for name, acc in report["per_class"].items():
        print(f"  {name:<{width}}  {100 * acc:6.2f}%")
    print(f"report: {out / 'evaluation.json'}; confusion matrix: {out / 'confusion.png'}")


def _register_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5, per-class accuracy and confusion matrix")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", help="where cifar10/cifar100 live")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, help="evaluate on this many images (class-stratified)")
    p.add_argument("--image-size", type=int, help="resize --data images to this first")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--protocol", default="single",
                   choices=["single", "dense", "multicrop", "dense+multicrop"],
                   help="the paper's test protocols (Section 3.2); default single (centre crop)")
    p.add_argument("--scales", type=int, nargs="+", metavar="Q",
                   help="test scales Q (shorter side); default: the checkpoint's test scale")
    p.add_argument("--grid", type=int, default=5, help="multicrop: grid x grid crops per scale")
    p.add_argument("--flip", "--tta", dest="flip", action="store_true",
                   help="also average over horizontally flipped images")
    p.add_argument("--tta-shift", type=int, default=0, metavar="N",
                   help="single protocol: also average over the crop translated by +-N pixels "
                        "(as `train --tta-shift`)")
    p.add_argument("--stream", action="store_true",
                   help="read an ImageFolder tree image by image (ImageNet); automatic for "
                        "checkpoints trained with --stream")
    p.add_argument("--workers", type=int, default=4, help="decoding processes with --stream")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--out", help="folder for evaluation.json and confusion.png (default: the run)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_evaluate)


# --- predict --------------------------------------------------------------------------------

def _cmd_predict(args) -> None:
    from .engine.train import pick_device
    from .inference.images import ImageReadError, find_images
    from .inference.predict import Predictor

    predictor = Predictor(args.checkpoint, device=pick_device(args.device), onnx=args.onnx)
    try:
        paths = find_images(args.images)
    except ImageReadError as exc:
        raise CLIError(str(exc)) from None
    results = predictor.predict(paths, top_k=args.top_k)
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([{"path": r.path, "error": r.error} if r.error else
                          {"path": r.path, "top": [{"class": c, "probability": round(p, 6)}
                                                   for c, p in r.top]} for r in results], indent=2))
    else:
        for r in results:
            if r.error:
                continue
            best = ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top)
            print(f"{r.path}: {best}")
    for r in failed:
        print(f"vggnet predict: error: {r.error}", file=sys.stderr)
    if failed:
        args.exit_code = 1


def _register_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained checkpoint")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--onnx", help="run this exported model in ONNX Runtime (e.g. the "
                                  "best.int8.onnx of `vggnet export --int8`)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)


# --- samples --------------------------------------------------------------------------------

def _cmd_samples(args) -> None:
    from PIL import Image

    from .data import load_splits

    _, test = load_splits(args.data, root=args.data_root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = test.subset(args.count, seed=1)
    for i in range(len(data)):
        arr = data.images[i].permute(1, 2, 0).numpy()
        name = f"{i:03d}_{data.classes[int(data.labels[i])]}.png"
        Image.fromarray(arr).resize((arr.shape[1] * 4, arr.shape[0] * 4), Image.NEAREST).save(out / name)
    print(f"wrote {len(data)} test images to {out}")


def _register_samples(sub) -> None:
    p = sub.add_parser("samples", help="write a few test images of a data set as PNG files")
    p.add_argument("data", help="cifar10, cifar100, digits or an ImageFolder path")
    p.add_argument("--data-root")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=8)
    p.set_defaults(func=_cmd_samples)


# --- export ---------------------------------------------------------------------------------

def _cmd_export(args) -> None:
    from .engine.checkpoint import load_checkpoint, resolve_checkpoint
    from .inference.export import export_onnx, export_torchscript

    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise CLIError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is "
                           "missing): pip install 'vggnet[export]'") from None
    ckpt = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(ckpt)
    size = args.input_size or int(meta.get("preprocessing", {}).get("input_size", 224))
    out = Path(args.out) if args.out else ckpt.with_suffix(".onnx" if args.format == "onnx" else ".pt")
    if args.format == "onnx":
        export_onnx(model, out, size, check=not args.no_check)
    else:
        export_torchscript(model, out, size, check=not args.no_check)
    checked = "" if args.no_check else (" (checked against ONNX Runtime)" if args.format == "onnx"
                                        else " (reloaded and checked)")
    print(f"wrote {out}{checked}")
    if args.int8:
        if args.format != "onnx":
            raise CLIError("--int8 makes an ONNX Runtime model: use it with --format onnx")
        from .inference.quantize import quantize_run

        int8_path = out.with_suffix(".int8.onnx")
        r = quantize_run(model, meta, out, int8_path, calibration=args.calibration,
                         check_images=args.check_images, data_root=args.data_root)
        print(f"wrote {int8_path} (int8, calibrated on {r['calibration_images']} training "
              f"images; top-1 agrees with fp32 on {100 * r['top1_agreement']:.2f}% of "
              f"{r['test_images']} test images)")


def _register_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", help="output file (default: beside the checkpoint)")
    p.add_argument("--input-size", type=int, help="example input size (default: the checkpoint's)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--int8", action="store_true",
                   help="also write an int8 ONNX model (ONNX Runtime static quantization), "
                        "calibrated on the run's own training images")
    p.add_argument("--calibration", type=int, default=512, help="calibration images for --int8")
    p.add_argument("--check-images", type=int, default=1000,
                   help="test images on which --int8 reports top-1 agreement with fp32")
    p.add_argument("--data-root", help="where the run's data set lives (for --int8)")
    p.set_defaults(func=_cmd_export)


# --- bench ----------------------------------------------------------------------------------

def _cmd_bench(args) -> None:
    from .bench import run_all

    run_all(out=args.out, data_root=args.data_root, quick_run=args.run, skip_int8=args.no_int8)


def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="CPU benchmarks against torchvision baselines (ratios)")
    p.add_argument("--data-root", help="where cifar10 lives")
    p.add_argument("--run", help="a finished CIFAR run: int8 agreement and time to 85%%")
    p.add_argument("--no-int8", action="store_true", help="skip the ONNX Runtime int8 part")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=_cmd_bench)


def register_commands(sub) -> None:
    for register in (_register_train, _register_evaluate, _register_predict, _register_samples,
                     _register_export, _register_bench):
        register(sub)
