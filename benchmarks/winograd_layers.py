"""Per layer: Winograd F(2x2,3x3) vs PyTorch's own convolution (oneDNN on the CPU), one
forward + backward in bf16, for the 3x3 layers of VGG-16 on CIFAR-10 (batch 128), timed
interleaved in one process. The rules of ``conv_algorithm = auto`` come from this table.

    python benchmarks/winograd_layers.py [--batch 128] [--reps 5] [--tag amx]

Writes benchmarks/results/winograd_layers.md, or winograd_layers_TAG.md with ``--tag`` (one
file per kind of CPU; report.py shows those it knows in RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vggnet.bench import environment
from vggnet.training.winograd import winograd_conv3x3

# (input channels, output channels, map side) of VGG-16's 3x3 layers on 32x32 images
LAYERS = [(64, 128, 16), (128, 128, 16), (128, 256, 8), (256, 256, 8), (256, 512, 4),
          (512, 512, 4), (512, 512, 2)]


def cpu_name() -> str:
    env = environment()
    return f"{env['cpu']} ({env.get('cpu_bf16') or 'no native bf16'})"


def _step(conv, x, w, b):
    def run():
        y = conv(x, w, b)
        y.backward(torch.ones_like(y))
        x.grad = w.grad = b.grad = None
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--tag", help="suffix of the results file, naming the kind of CPU")
    args = ap.parse_args()
    direct = lambda x, w, b: F.conv2d(x, w.bfloat16(), b.bfloat16(), padding=1)  # noqa: E731
    wino = lambda x, w, b: winograd_conv3x3(x, w, b, dtype=torch.bfloat16)  # noqa: E731
    lines = ["| input channels | output channels | map | direct (ms) | Winograd (ms) | speed-up |",
             "|---|---|---|---|---|---|"]
    for c, k, s in LAYERS:
        x = torch.randn(args.batch, c, s, s).to(memory_format=torch.channels_last).bfloat16()
        x.requires_grad_()
        w, b = torch.randn(k, c, 3, 3, requires_grad=True), torch.randn(k, requires_grad=True)
        runs = {"direct": _step(direct, x, w, b), "winograd": _step(wino, x, w, b)}
        times = {name: [] for name in runs}
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(args.reps):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0))
        d, wg = statistics.median(times["direct"]), statistics.median(times["winograd"])
        lines.append(f"| {c} | {k} | {s}x{s} | {d:.1f} | {wg:.1f} | {d / wg:.2f}x |")
        print(lines[-1], flush=True)
    note = (f"\nForward + backward of one bf16 3x3 convolution at batch {args.batch}, median of "
            f"{args.reps} interleaved calls. Measured on {cpu_name()} "
            f"with {torch.get_num_threads()} torch threads, torch {torch.__version__}.\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"winograd_layers_{args.tag}.md" if args.tag else "winograd_layers.md"
    (out / name).write_text("\n".join(lines) + "\n" + note)
    print(note)


if __name__ == "__main__":
    main()
