"""The baseline for configs/cifar10_speed.toml where airbench cannot run: airbench94's published
recipe (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"; 94.01% mean of 1,000
runs on the official CIFAR-10), written out in plain PyTorch from its description, on the CPU,
on the images vggnet trains on. The airbench package itself needs a CUDA GPU
(benchmarks/gpu_time_to_94.py runs it there).

    python benchmarks/airbench_recipe_cpu.py --data-root ../shared/data --out benchmarks/results/airbench_cpu.json

What it keeps from the recipe: the network (2x2 whitening layer, three blocks of conv-pool-BN-GELU
and conv-BN-GELU of widths 64/256/256, global max pool, linear layer without bias, logits / 9),
identity-initialised convolutions, batch norm with fixed scales, momentum 0.6 and eps 1e-12,
summed label-smoothed (0.2) loss, Nesterov SGD in airbench's decoupled units (lr 11.5, momentum
0.85, weight decay 0.0153 per 1024 images, BN biases at 64x the lr), a triangular schedule
(0.2 -> 1 at 23% -> 0.07) over 9.9 epochs of batch 1024, 2-pixel translations and alternating
flip, whitening bias trained for 3 epochs, Lookahead on the full state every 5 steps from epoch 3
with decay 0.95^5 (t/T)^3, and flip + 1-pixel-translation test-time views weighted 1/2, 1/4, 1/4.
bf16 autocast on the CPU instead of fp16 weights on the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.4914, 0.4822, 0.4465)  # the official training set's, as airbench uses
STD = (0.2470, 0.2435, 0.2616)


class FixedScaleBN(nn.BatchNorm2d):
    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=1 - 0.6)
        self.weight.requires_grad_(False)


def conv(cin: int, cout: int, kernel: int = 3, padding: int = 1, bias: bool = False) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, kernel, padding=padding, bias=bias)
    nn.init.dirac_(layer.weight.data[:cin])  # an implicit residual at initialisation
    return layer


def block(cin: int, cout: int) -> list[nn.Module]:
    return [conv(cin, cout), nn.MaxPool2d(2), FixedScaleBN(cout), nn.GELU(),
            conv(cout, cout), FixedScaleBN(cout), nn.GELU()]


class Div9(nn.Module):
    def forward(self, x):
        return x / 9


def make_net() -> nn.Sequential:
    net = nn.Sequential(conv(3, 24, 2, 0, bias=True), nn.GELU(), *block(24, 64),
                        *block(64, 256), *block(256, 256), nn.MaxPool2d(3), nn.Flatten(),
                        nn.Linear(256, 10, bias=False), Div9())
    net[0].weight.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


@torch.no_grad()
def whiten(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).float()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    values, vectors = values.flip(0), vectors.T.reshape(12, 3, 2, 2).flip(0)
    filters = vectors / torch.sqrt(values + eps).view(-1, 1, 1, 1)
    layer.weight.copy_(torch.cat((filters, -filters)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--epochs", type=float, default=9.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    from vggnet.bench import environment
    from vggnet.data import load_splits

    torch.manual_seed(args.seed)
    train, test = load_splits("cifar10", root=args.data_root)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def prepare(split):
        x = (split.images.float() / 255 - mean) / std
        return x.contiguous(memory_format=torch.channels_last), split.labels

    xtr, ytr = prepare(train)
    xte, yte = prepare(test)
    net = make_net()
    t_start = time.perf_counter()
    whiten(net[0], xtr[:5000].contiguous())

    batch, momentum = 1024, 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep, 0.0153 * batch / kilostep
    lr_bias = lr * 64
    bn_biases = [m.bias for m in net.modules() if isinstance(m, FixedScaleBN)]
    ids = {id(p) for p in bn_biases}
    others = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    opt = torch.optim.SGD([dict(params=bn_biases, lr=lr_bias, weight_decay=wd / lr_bias),
                           dict(params=others, lr=lr, weight_decay=wd / lr)],
                          momentum=momentum, nesterov=True)
    per_epoch = len(xtr) // batch
    total = math.ceil(per_epoch * args.epochs)
    peak = int(0.23 * total)

    def triangle(step: int) -> float:
        if step < peak:
            return 0.2 + 0.8 * step / peak
        return 1 + (0.07 - 1) * (step - peak) / (total - peak)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, triangle)
    flipped = torch.where((torch.rand(len(xtr)) < 0.5).view(-1, 1, 1, 1), xtr.flip(-1), xtr)
    padded = F.pad(flipped, (2, 2, 2, 2), mode="reflect")
    slow, step, history = None, 0, []

    @torch.no_grad()
    def evaluate(tta: bool) -> float:
        net.eval()
        correct = 0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for xb, yb in zip(xte.split(2000), yte.split(2000)):
                def mirror(z):
                    return 0.5 * net(z).float() + 0.5 * net(z.flip(-1)).float()
                if tta:
                    p = F.pad(xb, (1, 1, 1, 1), mode="reflect")
                    logits = (0.5 * mirror(xb) + 0.25 * mirror(p[..., :32, :32])
                              + 0.25 * mirror(p[..., 2:, 2:]))
                else:
                    logits = net(xb).float()
                correct += int((logits.argmax(1) == yb).sum())
        net.train()
        return correct / len(yte)

    train_s = 0.0
    for epoch in range(math.ceil(args.epochs)):
        t0 = time.perf_counter()
        net[0].bias.requires_grad_(epoch < 3)
        shifts = torch.randint(-2, 3, (len(xtr), 2))
        images = torch.empty_like(xtr)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                m = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                images[m] = padded[m][..., 2 + dy:34 + dy, 2 + dx:34 + dx]
        if epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(len(xtr))
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(images[idx]).float(), ytr[idx], label_smoothing=0.2,
                                       reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if epoch >= 3 and step % 5 == 0:
                state = net.state_dict()
                if slow is None:
                    slow = {k: v.clone() for k, v in state.items()}
                else:
                    decay = 0.95 ** 5 * (step / total) ** 3
                    for k, v in state.items():
                        if v.is_floating_point():
                            slow[k].lerp_(v, 1 - decay)
                            v.copy_(slow[k])
            if step >= total:
                break
        if slow is not None:
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    v.copy_(slow[k])
        epoch_s = time.perf_counter() - t0
        train_s += epoch_s
        history.append({"epoch": epoch + 1, "test_top1": evaluate(False),
                        "train_seconds": round(epoch_s, 1)})
        print(json.dumps(history[-1]), flush=True)
    result = {"recipe": "airbench94 (re-implemented, CPU)", "epochs": args.epochs,
              "seed": args.seed, "train_seconds": round(train_s, 1),
              "images_per_second": round(total * batch / train_s, 1),
              "test_top1": history[-1]["test_top1"], "test_top1_tta": evaluate(True),
              "wall_seconds": round(time.perf_counter() - t_start, 1), "history": history,
              "environment": environment()}
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "environment")}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
