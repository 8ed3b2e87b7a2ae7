"""torch.onnx's two exporters side by side on the model people serve: the dynamo exporter
(a torch.export graph, what `vggnet export` uses) and the TorchScript-based one it replaced
(deprecated in the pinned torch).

    python benchmarks/onnx_exporters.py [--model vgg16_bn] [--size 224] [--rounds 5]

The same model (batch norm folded, as `vggnet export` writes it) is exported both ways; then
both files answer the same images in ONNX Runtime and in OpenVINO: the largest difference
between their outputs, and the median time of a batch of 1 and of 8 for each, the two files
alternating round by round. Writes benchmarks/results/onnx_exporters.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULT = Path(__file__).resolve().parent / "results" / "onnx_exporters.json"


def _export_both(model, size: int, folder: Path) -> dict:
    from vggnet.export.formats import _example, export_onnx, fold_batchnorm, make_exportable

    files = {"dynamo": folder / "dynamo.onnx", "torchscript": folder / "torchscript.onnx"}
    seconds = {}
    start = time.perf_counter()
    export_onnx(model, files["dynamo"], size, check=False)
    seconds["dynamo"] = time.perf_counter() - start
    exportable = make_exportable(fold_batchnorm(model).cpu().float().eval(), size)
    x = _example(exportable, size)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of the comparison
        torch.onnx.export(exportable, (x,), str(files["torchscript"]), dynamo=False,
                          input_names=["images"], output_names=["logits"], opset_version=18,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    seconds["torchscript"] = time.perf_counter() - start
    return files, seconds


def _time(run, x, rounds: int) -> list[float]:
    run(x)  # warm-up
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(x)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    import onnxruntime as ort
    import openvino as ov

    from vggnet.bench import environment
    from vggnet.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        model.train()(torch.randn(4, 3, args.size, args.size))
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        files, export_s = _export_both(model, args.size, Path(d))
        runners = {}
        for name, path in files.items():
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            runners[("onnxruntime", name)] = \
                lambda x, s=session: s.run(None, {"images": x})[0]
            compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU")
            runners[("openvino", name)] = lambda x, c=compiled: c(x)[0]
        images = np.random.default_rng(0).standard_normal(
            (8, 3, args.size, args.size)).astype(np.float32)
        diff = {rt: float(np.abs(runners[(rt, "dynamo")](images)
                                 - runners[(rt, "torchscript")](images)).max())
                for rt in ("onnxruntime", "openvino")}
        times = {f"{rt}/{name}/batch{b}": [] for (rt, name) in runners for b in (1, 8)}
        for _ in range(args.rounds):  # the two files alternate, so load hits both alike
            for (rt, name), run in runners.items():
                for b in (1, 8):
                    times[f"{rt}/{name}/batch{b}"] += _time(run, images[:b], 1)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k.replace("/dynamo", ""): median[k] / median[k.replace("dynamo", "torchscript")]
             for k in median if "/dynamo/" in k}
    result = {"model": args.model, "size": args.size, "rounds": args.rounds,
              "export_seconds": export_s, "max_abs_output_difference": diff,
              "median_seconds": median,
              "time_ratio_dynamo_over_torchscript": ratio,
              "environment": {**environment(), "onnxruntime": ort.__version__,
                              "openvino": ov.__version__}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
