"""Grad-CAM of one 224-pixel image on VGG-16 against its floor: one forward pass plus the
backward pass back to the explained layer, timed in one run.

    python benchmarks/gradcam_speed.py --out benchmarks/results/gradcam_speed.json

Baseline: the whole network runs forward with autograd on (as a hook-based Grad-CAM does),
then ``torch.autograd.grad`` of the class score with respect to relu5_3's output. vggnet's
``grad_cam`` runs the layers up to relu5_3 without autograd and only the rest with it, and
adds the weighting and the map. Random weights (the time does not depend on them); medians of
interleaved calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def forward_and_backward_to(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The baseline: a full forward pass with autograd, then d(top score)/d(layer output)."""
    taps = {}
    handle = getattr(model.features, layer).register_forward_hook(
        lambda m, i, o: taps.setdefault("a", o))
    try:
        logits = model(x)
        score = logits[0, logits[0].argmax()]
        (g,) = torch.autograd.grad(score, taps["a"])
    finally:
        handle.remove()
    return g


def main() -> None:
    from vggnet.bench import environment
    from vggnet.features import grad_cam
    from vggnet.models import create_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--layer", default="relu5_3")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out")
    args = ap.parse_args()
    model = create_model(args.model).eval()
    for m in model.modules():  # a hook on an in-place ReLU's output needs it out of place
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    x = torch.randn(1, 3, args.size, args.size)
    contenders = {"forward + backward to the layer": lambda: forward_and_backward_to(
                      model, x, args.layer),
                  "vggnet grad_cam": lambda: grad_cam(model, x, args.layer)}
    for f in contenders.values():  # warm-up
        f()
    times = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for k, f in contenders.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    base, ours = med["forward + backward to the layer"], med["vggnet grad_cam"]
    result = {"environment": environment(), "model": args.model, "layer": args.layer,
              "size": args.size, "repeats": args.repeats,
              "baseline_ms": round(base, 1), "gradcam_ms": round(ours, 1),
              "ratio": round(ours / base, 2),
              "range_ms": {k: [round(min(v) * 1000, 1), round(max(v) * 1000, 1)]
                           for k, v in times.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
