"""The training loop: config -> data + model -> epochs -> checkpoints, read top to bottom.

One precision path: every forward runs under an autocast context that is a no-op in fp32.
Loss and accuracy are accumulated on the device and read back only when shown.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import DataError, ImageTensors, TensorLoader, load_splits
from ..evaluation.metrics import evaluate
from ..models import WeightsError, create_model, load_weights
from .checkpoint import (git_commit, load_state, resolve_checkpoint, save_model_checkpoint,
                         save_state, software_versions, write_json)
from .config import TrainConfig, validate
from .distributed import DistContext, init_distributed, shutdown
from .plots import plot_curves

log = logging.getLogger("vggnet")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept."""


# --- building blocks ------------------------------------------------------------------------

def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but no CUDA GPU is available; "
                         "use --device cpu or auto")
    return device


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 when asked, or by default on a GPU."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16 when asked (or auto on a GPU), else a no-op."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)


def build_data(cfg: TrainConfig) -> tuple[ImageTensors, ImageTensors]:
    train, test = load_splits(cfg.data, root=cfg.data_root, image_size=cfg.image_size,
                              download=cfg.download, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return train.subset(cfg.train_subset, cfg.seed), test.subset(cfg.test_subset, cfg.seed)


@dataclass
class Data:
    """What the loop needs from the data: loaders and what the checkpoint records."""
    loader: object
    test_loader: object
    classes: list[str]
    mean: list[float]
    std: list[float]
    channels: int
    input_size: int
    n_train: int
    n_test: int
    test_set: ImageTensors | None = None  # in-memory test images, for the scale protocols
    train_set: ImageTensors | None = None  # in-memory training images

    def whitening_sample(self, n: int = 5000) -> torch.Tensor:
        """Up to ``n`` normalised training images (float, on the CPU), to set a whitening
        layer from: the first ``n`` of the in-memory set, or streamed batches."""
        if self.train_set is not None:
            x = self.train_set.images[:n].float().div_(255)
            mean = torch.tensor(self.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.std).view(1, -1, 1, 1)
            return (x - mean) / std
        batches, seen = [], 0  # streamed: the loader's batches come normalised
        for xb, _ in self.loader.batches(0):
            batches.append(xb.float().cpu())
            seen += len(xb)
            if seen >= n:
                break
        return torch.cat(batches)[:n]


def build_loaders(cfg: TrainConfig, ctx: DistContext, device: torch.device,
                  data_gen: torch.Generator) -> Data:
    """In-memory uint8 tensors on the device (the default), or a streamed ImageFolder."""
    per_rank = cfg.batch_size // ctx.world_size
    if cfg.stream:
        from ..data.stream import IMAGENET_MEAN, IMAGENET_STD, FolderImages, StreamLoader, stream_splits

        train_dir, test_dir = stream_splits(cfg.data)
        crop = cfg.crop_size
        s_min = cfg.scale or crop
        s_max = cfg.scale_max or s_min
        if s_min < crop:
            raise ValueError(f"scale {s_min} is smaller than the crop size {crop}")
        train_images = FolderImages(train_dir, train=True, crop=crop, scale=(s_min, s_max),
                                    flip=cfg.flip)
        test_images = FolderImages(test_dir, train=False, crop=crop,
                                   test_scale=test_scale(cfg, crop))
        if test_images.classes != train_images.classes:
            raise DataError(f"{cfg.data}: the class folders of {train_dir.name}/ and "
                            f"{test_dir.name}/ differ")
        common = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device,
                      channels_last=cfg.channels_last, workers=cfg.workers)
        loader = StreamLoader(train_images, per_rank, train=True, lighting=cfg.lighting,
                              generator=data_gen, rank=ctx.rank, world_size=ctx.world_size,
                              shuffle_seed=cfg.seed, **common)
        test_loader = StreamLoader(test_images, cfg.eval_batch_size, **common)
        return Data(loader, test_loader, train_images.classes, IMAGENET_MEAN, IMAGENET_STD, 3,
                    crop, len(train_images), len(test_images))

    # decoded once into uint8 tensors, kept on the device
    train_set, test_set = build_data(cfg)
    mean, std = train_set.stats()
    loader = TensorLoader(train_set, per_rank, mean=mean, std=std,
                          train=True, rank=ctx.rank, world_size=ctx.world_size,
                          crop_padding=cfg.crop_padding, flip=cfg.flip, cutout=cfg.cutout,
                          device=device, generator=data_gen, drop_last=len(train_set) > cfg.batch_size,
                          channels_last=cfg.channels_last, lighting=cfg.lighting,
                          scale=(cfg.scale, cfg.scale_max or cfg.scale) if cfg.scale else None,
                          crop_size=cfg.crop_size, shuffle_seed=cfg.seed,
                          alternate_flip=cfg.alternate_flip)
    input_size = cfg.crop_size or int(train_set.images.shape[-1])
    if cfg.scale and min(cfg.scale, input_size) < input_size:
        raise ValueError(f"scale {cfg.scale} is smaller than the crop size {input_size}")
    test_loader = TensorLoader(test_set, cfg.eval_batch_size, mean=mean, std=std, device=device,
                               channels_last=cfg.channels_last)
    return Data(loader, test_loader, train_set.classes, mean, std, int(train_set.images.shape[1]),
                input_size, len(train_set), len(test_set), test_set, train_set)


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int = 3) -> nn.Module:
    options = {"init": cfg.init} if cfg.init else {}  # none: the model's own
    model = create_model(cfg.model, num_classes=num_classes, in_channels=in_channels,
                         width=cfg.width, head=cfg.head, dropout=cfg.dropout, fc_dim=cfg.fc_dim,
                         **options)
    if cfg.weights:
        path = cfg.weights
        if path.lower() in ("imagenet", "torchvision"):  # published weights, verified
            from ..models.hub import pretrained_file

            path = pretrained_file(cfg.model)
        elif Path(path).is_dir():
            path = resolve_checkpoint(path)
        report = load_weights(model, path)
        log.info(f"loaded {len(report.loaded)} tensors from {cfg.weights} ({report.format} format)")
    if cfg.init_from:
        from ..models.weights import init_from_shallower

        copied = init_from_shallower(model, resolve_checkpoint(cfg.init_from)
                                     if Path(cfg.init_from).is_dir() else cfg.init_from)
        log.info(f"initialised {', '.join(copied)} from {cfg.init_from}")
    if cfg.freeze == "features":
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model


def apply_conv_algorithm(model: nn.Module, cfg: TrainConfig, device: torch.device) -> int:
    """Run 3x3 convolutions of small maps by Winograd's F(2x2, 3x3) where that was measured
    faster: bf16 training steps on the CPU, layers of >= 256 channels on maps of <= 8x8
    (models/winograd.py). ``winograd`` forces it for every 3x3 convolution on maps of <= 8x8,
    in any precision, evaluation included. Parameters are shared, so checkpoints are unchanged.
    Returns how many convolutions may use it."""
    from ..models.winograd import convert_to_winograd

    if cfg.conv_algorithm == "winograd":
        return convert_to_winograd(model, min_channels=1, dtypes=None, backward_only=False)
    if cfg.conv_algorithm == "auto" and device.type == "cpu" and uses_bf16(device,
                                                                           cfg.precision):
        return convert_to_winograd(model)
    return 0


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    """SGD (Nesterov) or AdamW; no weight decay on batch-norm and bias parameters; the
    batch-norm biases' learning rate multiplied by ``norm_bias_lr``."""
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    decay, no_decay, fast_biases = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_biases and cfg.norm_bias_lr != 1.0:
            fast_biases.append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if fast_biases:
        groups.append({"params": fast_biases, "weight_decay": 0.0,
                       "lr": cfg.lr * cfg.norm_bias_lr})
    fast = {"foreach": True} if device.type == "cpu" else {"fused": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **fast)
    return torch.optim.AdamW(groups, lr=cfg.lr, **fast)


def build_ema(model: nn.Module, decay: float):
    """An exponential moving average of the weights and batch-norm statistics
    (``torch.optim.swa_utils.AveragedModel``). The decay ramps up as (1 + n) / (10 + n) until it
    reaches ``decay``, so that the first, fast-moving steps are forgotten quickly."""
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def update(averaged: list, current: list, n) -> None:
        n = int(n)
        d = min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # num_batches_tracked
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


class Lookahead:
    """Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back"):
    every ``k`` optimizer steps, slow weights move ``alpha`` of the way towards the trained
    (fast) weights, and the fast weights restart from them. The inner optimizer's state
    (momentum) is kept. Only trainable parameters take part; batch-norm statistics do not."""

    def __init__(self, model: nn.Module, k: int, alpha: float, ramp_steps: int = 0):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.steps, self.ramp_steps = k, alpha, 0, ramp_steps

    def current_alpha(self) -> float:
        """``alpha``, or with ``ramp_steps`` (airbench's schedule) 1 - (1 - alpha) (t/T)^3:
        the slow weights follow the fast ones early and average strongly at the end."""
        if not self.ramp_steps:
            return self.alpha
        t = min(1.0, self.steps / self.ramp_steps)
        return 1 - (1 - self.alpha) * t ** 3

    @torch.no_grad()
    def step(self) -> bool:
        """Call after each optimizer step; True when this step synchronised."""
        self.steps += 1
        if self.steps % self.k:
            return False
        torch._foreach_lerp_(self.slow, [p.detach() for p in self.params], self.current_alpha())
        for p, s in zip(self.params, self.slow):
            p.copy_(s)
        return True

    def state_dict(self) -> dict:
        return {"slow": [s.clone() for s in self.slow], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if len(state["slow"]) != len(self.slow):
            raise ValueError("lookahead state does not match the model's trainable parameters")
        for s, saved in zip(self.slow, state["slow"]):
            s.copy_(saved)
        self.steps = int(state["steps"])


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (the schedule, with warm-up)."""
    total = cfg.epochs * steps_per_epoch
    t = step / max(1, total)
    if cfg.schedule == "onecycle":
        # linear from 0.1 up to 1 over the warm-up (default a quarter of the run), then to 0
        peak = (cfg.warmup_epochs / cfg.epochs) if cfg.warmup_epochs else 0.25
        if t < peak:
            return 0.1 + 0.9 * t / peak
        return max(0.0, (1 - t) / (1 - peak))
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if cfg.schedule == "step":  # the paper's divide-by-10, at fixed epochs
        return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    return 1.0  # constant, and plateau (lowered by ReduceLROnPlateau after each epoch)


# --- the run --------------------------------------------------------------------------------

@dataclass
class RunResult:
    out: Path
    history: list[dict]
    best_top1: float
    interrupted: bool = False


def train(cfg: TrainConfig) -> RunResult:
    """Run (or resume) a training run; with torchrun, one process per device."""
    validate(cfg)
    ctx, device = init_distributed(pick_device(cfg.device))
    try:
        return _train(cfg, ctx, device)
    finally:
        shutdown()


def _train(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> RunResult:
    out = Path(cfg.out)
    main = ctx.is_main  # only rank 0 logs and writes files
    existing = [p.name for p in (out / "last.safetensors", out / "last.state.pt") if p.is_file()]
    if existing and not cfg.resume and not cfg.overwrite:
        raise ValueError(f"{out} already holds a run ({', '.join(existing)}); continue it with "
                         "--resume, start afresh with --overwrite true, or choose another --out")
    if cfg.resume and not (out / "last.state.pt").is_file():
        raise ValueError(f"--resume: {out / 'last.state.pt'} not found; is {out} a run that "
                         "finished at least one epoch (or was interrupted)?")
    if ctx.world_size > 1 and cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by "
                         f"the {ctx.world_size} processes")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    data_gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation

    data = build_loaders(cfg, ctx, device, data_gen)
    loader, test_loader, mean, std = data.loader, data.test_loader, data.mean, data.std
    num_classes, input_size = len(data.classes), data.input_size
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format

    model = build_model(cfg, num_classes, data.channels)
    whiten = getattr(model, "has_whitening", False)
    if whiten and not (cfg.weights or cfg.init_from or cfg.resume):
        model.init_whitening(data.whitening_sample())
        log.info("whitening layer set from the covariance of the training images' patches")
    model = model.to(device, memory_format=memory)
    if apply_conv_algorithm(model, cfg, device):
        log.info("3x3 convolutions of small maps run by Winograd's F(2x2,3x3) "
                 f"(conv_algorithm {cfg.conv_algorithm})")
    if ctx.enabled and cfg.sync_bn:  # before the optimizer: the BN parameters are replaced
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg, model, device)
    steps = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps))
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max",
                                                          factor=cfg.step_gamma, patience=2)
               if cfg.schedule == "plateau" else None)
    autocast = autocast_for(device, cfg.precision)
    ema = build_ema(model, cfg.ema) if cfg.ema else None
    lookahead = (Lookahead(model, cfg.lookahead, cfg.lookahead_alpha,
                           ramp_steps=cfg.epochs * steps if cfg.lookahead_ramp else 0)
                 if cfg.lookahead else None)
    run_model = model
    if ctx.enabled:
        run_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    run_model = torch.compile(run_model) if cfg.compile else run_model
    if not main:
        cfg = replace(cfg, progress=False)
        log.setLevel(logging.WARNING)

    history: list[dict] = []
    best, start_epoch, start_step, partial = -1.0, 0, 0, None
    if cfg.resume:
        state = load_state(out / "last.state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if plateau is not None and "plateau" in state:
            plateau.load_state_dict(state["plateau"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        data_gen.set_state(state["data_rng"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"--resume with ema: {out} was trained without ema; resume it "
                                 "with --ema 0")
            ema.load_state_dict(state["ema"])
        if lookahead is not None:
            if "lookahead" not in state:
                raise ValueError(f"--resume with lookahead: {out} was trained without it; "
                                 "resume it with --lookahead 0")
            lookahead.load_state_dict(state["lookahead"])
        start_epoch, best, history = state["epoch"], state["best_top1"], state["history"]
        start_step, partial = state.get("step", 0), state.get("partial")
        log.info(f"resuming {out} after epoch {start_epoch}"
                 + (f", step {start_step}" if start_step else ""))
        if start_epoch >= cfg.epochs:
            log.info(f"{out} already finished its {cfg.epochs} epochs")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # half-written files of a run that was killed
            stale.unlink(missing_ok=True)
        write_json(out / "config.json", cfg.to_dict())

    meta_base = {
        "classes": data.classes,
        "preprocessing": {"mean": mean, "std": std, "input_size": input_size,
                          "test_scale": test_scale(cfg, input_size),
                          "resize": "shorter side to input_size, then centre crop",
                          "channels": data.channels},
        "data": {"source": cfg.data, "train_images": data.n_train, "test_images": data.n_test},
        "config": cfg.to_dict(), "versions": software_versions(), "git_commit": git_commit(),
    }
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    sync_every = 1 if device.type == "cpu" else 50  # reading a GPU value stalls the pipeline

    def snapshot(epoch: int, step: int = 0, partial_sums=None) -> dict:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                 "data_rng": data_gen.get_state(), "epoch": epoch, "step": step,
                 "best_top1": best, "history": history}
        if partial_sums is not None:
            state["partial"] = partial_sums
        if ema is not None:
            state["ema"] = ema.state_dict()
        if lookahead is not None:
            state["lookahead"] = lookahead.state_dict()
        if plateau is not None:
            state["plateau"] = plateau.state_dict()
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    stop = _GracefulStop()
    with stop:  # Ctrl-C ends the current step, saves, and returns
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if whiten:  # the whitening bias trains for the first epochs only
                model.features.whiten.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
            if cfg.freeze == "features":
                model.features.eval()  # frozen backbone: keep its batch-norm statistics
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            seen, skip = 0, 0
            if epoch == start_epoch and start_step:  # resuming in the middle of this epoch
                skip = start_step
                loss_sum += partial["loss_sum"]
                correct += partial["correct"]
                seen = int(partial["seen"])
            seen0, t0 = seen, time.perf_counter()
            loader.set_epoch(epoch)
            bar = _progress(loader.batches(skip), cfg, f"epoch {epoch + 1}/{cfg.epochs}",
                            total=steps, initial=skip)
            for i, (x, y) in enumerate(bar, start=skip):
                with autocast():
                    logits = run_model(x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if lookahead is not None:
                    lookahead.step()
                if ema is not None:
                    ema.update_parameters(model)
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if (i + 1) % sync_every == 0 or i + 1 == steps:
                    current = loss.item()
                    if not math.isfinite(current):
                        raise TrainingError(
                            f"the loss became {current} at epoch {epoch + 1}, step {i + 1}; the "
                            f"last good checkpoint (epoch {epoch}) is kept in {out}. Lower --lr, "
                            "or use warm-up (--warmup-epochs)")
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                        acc=f"{correct.item() / seen:.3f}",
                                        ips=f"{(seen - seen0) / (time.perf_counter() - t0):.0f}")
                if stop.requested and i + 1 < steps:
                    # Ctrl-C: the step is finished; save where we are and leave cleanly.
                    sums = {"loss_sum": loss_sum.cpu(), "correct": correct.cpu(), "seen": seen}
                    if main:
                        save_state(out / "last.state.pt", snapshot(epoch, i + 1, sums))
                    log.warning(f"interrupted at epoch {epoch + 1}, step {i + 1}: state saved "
                                f"in {out}; continue with --resume")
                    return RunResult(out, history, best, interrupted=True)
            train_time = time.perf_counter() - t0
            seen_now = seen - seen0

            # with ema, the averaged weights are the run's model: evaluated and saved
            final = ema.module if ema is not None else model
            t_eval = time.perf_counter()
            result = _evaluate_epoch(ema.module if ema is not None else run_model, test_loader,
                                     data.test_set, cfg, input_size, mean, std, device, autocast)
            if plateau is not None:
                plateau.step(result["top1"])
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                      "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
                      "test_loss": result["loss"], "test_top1": result["top1"],
                      "test_top5": result["top5"], "train_seconds": round(train_time, 2),
                      "eval_seconds": round(time.perf_counter() - t_eval, 2),
                      "images_per_second": round(seen_now / train_time, 1)}
            history.append(record)
            log.info(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
                     f"acc {100 * record['train_acc']:.2f}% | test loss {record['test_loss']:.4f} "
                     f"top-1 {100 * record['test_top1']:.2f}% top-5 {100 * record['test_top5']:.2f}% "
                     f"| {record['images_per_second']:.0f} img/s")

            # Checkpoints: resume state first, then the weights for evaluation; each atomic.
            improved = result["top1"] > best
            best = max(best, result["top1"])
            if main:
                save_state(out / "last.state.pt", snapshot(epoch + 1))
                meta = {**meta_base, "epoch": epoch + 1, "metrics": dict(record)}
                save_model_checkpoint(final, out / "last.safetensors", meta)
                if improved:
                    save_model_checkpoint(final, out / "best.safetensors", meta)
                _write_history(out, history)
            if stop.requested and epoch + 1 < cfg.epochs:
                log.warning(f"interrupted after epoch {epoch + 1}: checkpoint saved in {out}; "
                            "continue with --resume")
                return RunResult(out, history, best, interrupted=True)
            if cfg.stop_after is not None and epoch + 1 >= cfg.stop_after and epoch + 1 < cfg.epochs:
                log.info(f"stopped after epoch {epoch + 1} as asked; continue with --resume")
                return RunResult(out, history, best, interrupted=True)
        return RunResult(out, history, best)


def test_scale(cfg: TrainConfig, input_size: int) -> int:
    """The paper's single test scale: Q = S for fixed S, Q = (S_min + S_max) / 2 if jittered."""
    if not cfg.scale:
        return input_size
    return (cfg.scale + (cfg.scale_max or cfg.scale)) // 2


def _evaluate_epoch(model, loader, test_set, cfg, input_size, mean, std, device, autocast):
    if not cfg.scale or test_set is None:  # streamed sets: the loader rescales to Q itself
        return evaluate(model, loader, len(loader.classes), autocast=autocast, tta=cfg.tta,
                        tta_shift=cfg.tta_shift)
    from ..evaluation.protocols import evaluate_protocol

    return evaluate_protocol(model, test_set.images, test_set.labels, protocol="single",
                             scales=[test_scale(cfg, input_size)], crop=input_size, flip=cfg.tta,
                             mean=mean, std=std, batch_size=cfg.eval_batch_size, device=device,
                             autocast=autocast, shift=cfg.tta_shift)


class _GracefulStop:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``; the loop finishes its
    step and saves. A second Ctrl-C interrupts at once. Outside the main thread: a no-op."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


def _progress(batches, cfg: TrainConfig, desc: str, total: int, initial: int = 0):
    if not cfg.progress:
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None,
                total=total, initial=initial)


def _write_history(out: Path, history: list[dict]) -> None:
    from .checkpoint import atomic_write

    text = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(out / "metrics.jsonl", lambda p: p.write_text(text))
    keys = list(history[0])
    csv = ",".join(keys) + "\n" + "".join(",".join(str(h[k]) for k in keys) + "\n" for h in history)
    atomic_write(out / "metrics.csv", lambda p: p.write_text(csv))
    try:
        plot_curves(history, out / "curves.png")
    except Exception as exc:  # a plot must never stop a run
        log.warning(f"could not draw curves.png: {exc}")
