"""`vggnet export`: ONNX (checked against ONNX Runtime), OpenVINO IR (checked against OpenVINO),
torch.export's ExportedProgram or an AOTInductor package, and int8 for ONNX Runtime and
OpenVINO."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


NAME = "export"
# each format's file, beside the checkpoint unless --out says otherwise
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2", "aoti": ".aoti.pt2"}
# shown at the end of `vggnet export --help`
EXAMPLES = (
    "vggnet export runs/photos --format openvino --int8",
    "vggnet export runs/photos --format onnx --int8 --calibration 256",
    "vggnet export runs/photos --format onnx --out model.onnx",
)


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, OpenVINO, torch.export or AOTInductor")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--format", choices=list(SUFFIX), default="onnx",
                   help="onnx (default), openvino (IR: best.xml + best.bin), pt2 (torch.export's "
                        "ExportedProgram, best.pt2) or aoti (an AOTInductor package compiled "
                        "for this CPU, best.aoti.pt2; needs a C++ compiler)")
    p.add_argument("--out", help="output file (default: beside the checkpoint)")
    p.add_argument("--input-size", type=int, help="example input size (default: the checkpoint's)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--int8", action="store_true",
                   help="also write an int8 model calibrated on the run's own training "
                        "images: best.int8.onnx (ONNX Runtime static quantization, 7-bit "
                        "weights), or with --format openvino best.int8.xml (NNCF, first "
                        "convolution kept in floating point: the closer to fp32)")
    p.add_argument("--calibration", type=int, default=512, help="training images to calibrate --int8 on (default 512; fewer if the run has fewer)")
    p.add_argument("--check-images", type=int, default=1000,
                   help="test images on which --int8 reports top-1 agreement with fp32 (default 1000)")
    p.add_argument("--int8-full-range", action="store_true",
                   help="ONNX Runtime's int8 weights with all 8 bits: only for models that "
                        "will run on CPUs with VNNI or AMX (elsewhere ONNX Runtime saturates; "
                        "the default 7-bit weights run correctly on any CPU)")
    p.add_argument("--data-root", help="where the run's data set lives (for --int8)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..export.formats import export_onnx
    from ..run import load_checkpoint, resolve_checkpoint

    if args.int8_full_range and not args.int8:
        raise UsageError("--int8-full-range shapes the --int8 model: add --int8")
    if args.int8 and args.format in ("pt2", "aoti"):
        raise UsageError("--int8 makes an ONNX Runtime or OpenVINO model: use it with --format "
                         "onnx or openvino")
    if args.int8_full_range and args.format == "openvino":
        raise UsageError("--int8-full-range shapes ONNX Runtime's int8 model; OpenVINO's already "
                         "has 8-bit weights (its first convolution, the layer that would "
                         "saturate, stays in floating point): drop the flag")
    if args.input_size is not None and args.input_size < 1:
        raise UsageError(f"--input-size must be at least 1 pixel, not {args.input_size}")
    if args.int8:
        from ..export.quantize import check_int8_counts

        check_int8_counts(args.calibration, args.check_images)  # before the fp32 export
    if args.format in ("onnx", "openvino"):
        _need_onnx()
    if args.format == "openvino":
        from ..export.openvino import need_nncf, need_openvino

        need_nncf() if args.int8 else need_openvino()
    ckpt = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(ckpt)
    size = args.input_size or meta.preprocessing.input_size
    out = Path(args.out) if args.out else ckpt.with_suffix(SUFFIX[args.format])
    if args.format == "onnx":
        export_onnx(model, out, size, check=not args.no_check)
        checked = " (checked against ONNX Runtime)"
    elif args.format == "openvino":
        from ..export.openvino import export_openvino

        export_openvino(model, out, size, check=not args.no_check)
        checked = " (checked against OpenVINO in fp32)"
    else:
        from ..export.pt2 import export_aoti, export_pt2

        (export_pt2 if args.format == "pt2" else export_aoti)(model, out, size,
                                                               check=not args.no_check)
        checked = " (loaded again and checked against PyTorch)"
    print(f"wrote {out}{'' if args.no_check else checked}")
    if args.int8:
        _int8(model, meta, out, args)


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is "
                         "missing): pip install 'vggnet[export]'") from None


def _int8(model, meta, out: Path, args) -> None:
    if args.format == "openvino":
        from ..export.openvino import quantize_run_openvino

        xml = out.with_suffix("").with_suffix(".int8.xml")
        r = quantize_run_openvino(model, meta, out, xml, calibration=args.calibration,
                                  check_images=args.check_images, data_root=args.data_root)
        print(f"wrote {xml} (int8 for OpenVINO, NNCF calibrated on "
              f"{r['calibration_images']} training images; top-1 agrees with fp32 on "
              f"{100 * r['top1_agreement']:.2f}% of {r['test_images']} test images)")
        return
    from ..export.quantize import quantize_run

    int8_path = out.with_suffix("").with_suffix(".int8.onnx")
    r = quantize_run(model, meta, out, int8_path, calibration=args.calibration,
                     check_images=args.check_images, data_root=args.data_root,
                     reduce_range=not args.int8_full_range)
    print(f"wrote {int8_path} (int8, calibrated on {r['calibration_images']} training images; "
          f"top-1 agrees with fp32 on {100 * r['top1_agreement']:.2f}% of {r['test_images']} "
          "test images in ONNX Runtime)")
