"""The names of the inference backends, apart from the backends themselves (which load
PyTorch), so that the command line can list them before anything heavy is imported."""

BACKENDS = ("auto", "torch", "onnx", "int8", "openvino", "openvino-int8", "pt2", "aoti")

# fastest first, as `vggnet bench` measured them side by side (benchmarks/RESULTS.md): int8 in
# OpenVINO, then in ONNX Runtime, then vggnet's own PyTorch engine, which ran VGG-16 in bf16
# as fast as OpenVINO's bf16 (1.03x its time at batch 1, 1.02x at batch 32) and in fp32 on
# par with OpenVINO's fp32, with Grad-CAM and no export step (so OpenVINO without an int8
# model is not worth an export and a second runtime). An int8 model is only there
# when the user made one (`vggnet export RUN --int8`, which reports its agreement with fp32).
AUTO_ORDER = ("openvino-int8", "int8", "torch")

# what each backend is, in the words of the command line's help
WHAT = {"torch": "vggnet's PyTorch engine on the checkpoint",
        "onnx": "ONNX Runtime fp32 on best.onnx",
        "int8": "ONNX Runtime on best.int8.onnx",
        "openvino": "OpenVINO fp32 or bf16 on best.xml",
        "openvino-int8": "OpenVINO on best.int8.xml",
        "pt2": "torch.export's program in best.pt2",
        "aoti": "the AOTInductor package best.aoti.pt2"}


def backend_help() -> str:
    """--backend's help, from :data:`AUTO_ORDER` and :data:`WHAT` (one source for the text
    and the code)."""
    order = ", then ".join(f"{b} ({WHAT[b]})" for b in AUTO_ORDER)
    others = "; ".join(f"{b}: {WHAT[b]}" for b in BACKENDS if b not in ("auto",))
    return (f"what runs the network. auto (default): the first that the run's files and the "
            f"installed packages allow, of {order}; an int8 model exists only once `vggnet "
            f"export RUN --int8` made it. Or name one: {others}")
