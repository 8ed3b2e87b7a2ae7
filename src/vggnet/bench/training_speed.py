"""Training throughput: ``vggnet train``'s own loop against the common tutorial loop
(torchvision ``vgg16_bn`` features + Linear head, ``DataLoader`` with PIL transforms), same
model, same batch, timed interleaved in one process."""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
import torch.nn as nn

from ..device import cpu_bf16_flag, resolve_precision


def _tutorial_loop_throughput(train_set, mean, std, batch: int, steps: int, warmup: int,
                              workers: int) -> float:
    """The loop of the common tutorials: PIL transforms in DataLoader workers, eager fp32."""
    import torchvision
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])

    class PILDataset(torch.utils.data.Dataset):  # as torchvision.datasets.CIFAR10 serves items
        def __init__(self, images, labels):
            self.images = images.permute(0, 2, 3, 1).numpy()
            self.labels = labels.tolist()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return tf(Image.fromarray(self.images[i])), self.labels[i]

    loader = torch.utils.data.DataLoader(PILDataset(train_set.images, train_set.labels),
                                         batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    model = nn.Sequential(torchvision.models.vgg16_bn().features, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(512, len(train_set.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    model.train()
    it = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(it)
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def build_engine_loop(train_set, mean, std, batch: int, precision: str,
                      conv_algorithm: str = "auto", max_pixels: int | None = None):
    """The state, step and loader of ``vggnet train``'s own loop, built by the training
    package's own functions (model, optimizer, schedule, precision, convolution algorithm), for
    VGG-16-BN with a linear head. ``max_pixels`` replaces the largest map ``conv_algorithm =
    auto`` runs by Winograd on this CPU, to compare that rule with another one."""
    from ..data import TensorLoader
    from ..device import autocast_for
    from ..training.config import TrainConfig
    from ..training.loop import Step
    from ..training.setup import (apply_conv_algorithm, build_model, build_optimizer,
                                 build_schedule)
    from ..training.state import TrainState

    device = torch.device("cpu")
    cfg = TrainConfig(model="vgg16_bn", head="linear", lr=0.01, precision=precision,
                      conv_algorithm=conv_algorithm, batch_size=batch, epochs=1)
    loader = TensorLoader(train_set, batch, mean=mean, std=std, train=True, crop_padding=4,
                          flip=True, channels_last=True, drop_last=True)
    model = build_model(cfg, len(train_set.classes)).to(memory_format=torch.channels_last)
    if apply_conv_algorithm(model, cfg, device) and max_pixels:  # as `vggnet train` does
        from ..training.winograd import convert_to_winograd
        convert_to_winograd(model, max_pixels=max_pixels)  # the converted layers, re-ruled
    optimizer = build_optimizer(cfg, model, device)
    state = TrainState(model, optimizer, build_schedule(cfg, optimizer, len(loader)),
                       torch.Generator().manual_seed(0))
    step = Step(model, nn.CrossEntropyLoss(), autocast_for(device, precision))
    return state, step, loader


def _vggnet_engine_throughput(train_set, mean, std, batch: int, steps: int, warmup: int,
                              precision: str, conv_algorithm: str = "auto",
                              max_pixels: int | None = None) -> float:
    """The loop of ``vggnet train`` itself (:func:`build_engine_loop`): ``train_one_epoch``
    runs the steps timed."""
    from ..training.loop import train_one_epoch

    state, step, loader = build_engine_loop(train_set, mean, std, batch, precision,
                                            conv_algorithm, max_pixels)
    train_one_epoch(state, step, loader, limit=warmup)
    sums = train_one_epoch(state, step, loader, limit=steps)
    return sums.images / sums.seconds


def bench_training(data: str = "cifar10", root=None, batch: int = 128, steps: int = 20,
                   warmup: int = 3, workers: int = 2, repeats: int = 3,
                   other_max_pixels: tuple = ()) -> dict:
    """Each contender is timed ``repeats`` times, interleaved (so a slow spell of the machine
    hits all of them); the medians are compared, the ranges reported. ``other_max_pixels``
    adds, on bf16 CPUs, the default loop with Winograd on maps of up to each of those sizes
    instead of this CPU's own rule (``winograd_max_pixels`` in the result)."""
    from ..data import load_splits
    from ..training.winograd import auto_max_pixels

    train_set, _ = load_splits(data, root=root)
    mean, std = train_set.stats()
    contenders = {"baseline": lambda: _tutorial_loop_throughput(train_set, mean, std, batch, steps,
                                                                warmup, workers),
                  "fp32": lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                            warmup, "fp32")}
    if cpu_bf16_flag():  # the engine's default (winograd for small maps), and without it
        contenders["bf16"] = lambda: _vggnet_engine_throughput(train_set, mean, std, batch, steps,
                                                               warmup, "bf16")
        contenders["bf16_direct"] = lambda: _vggnet_engine_throughput(
            train_set, mean, std, batch, steps, warmup, "bf16", conv_algorithm="direct")
        for px in other_max_pixels:
            contenders[f"bf16_winograd_{px}px"] = partial(
                _vggnet_engine_throughput, train_set, mean, std, batch, steps, warmup, "bf16",
                max_pixels=px)
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(fn())
    med = {name: statistics.median(v) for name, v in runs.items()}
    spread = {name: [round(min(v), 1), round(max(v), 1)] for name, v in runs.items()}
    row = {"model": "vgg16_bn (linear head), CIFAR-10 32x32", "batch": batch, "steps": steps,
           "repeats": repeats,
           "baseline": f"torchvision vgg16_bn + DataLoader({workers} workers, PIL transforms), fp32",
           "baseline_images_per_s": round(med["baseline"], 1),
           "vggnet_fp32_images_per_s": round(med["fp32"], 1),
           "ratio_fp32": round(med["fp32"] / med["baseline"], 2), "range_images_per_s": spread,
           "default_precision": resolve_precision("cpu", "auto"),
           "winograd_max_pixels": auto_max_pixels()}  # the largest map it took (auto)
    if "bf16" in med:
        row.update(vggnet_bf16_images_per_s=round(med["bf16"], 1),
                   ratio_bf16=round(med["bf16"] / med["baseline"], 2),
                   vggnet_bf16_direct_images_per_s=round(med["bf16_direct"], 1),
                   ratio_bf16_direct=round(med["bf16_direct"] / med["baseline"], 2))
        for px in other_max_pixels:  # the same step under another Winograd rule
            row.setdefault("winograd_rules", {})[str(px)] = {
                "images_per_s": round(med[f"bf16_winograd_{px}px"], 1),
                "ratio": round(med[f"bf16_winograd_{px}px"] / med["baseline"], 2)}
    return row
