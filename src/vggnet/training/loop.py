"""The training loop, read top to bottom: config -> data + model -> epochs -> checkpoints.

One precision path: every forward runs under an autocast context that is a no-op in fp32.
Loss and accuracy are summed on the device and read back only when shown (on a GPU, reading
a value stalls the pipeline). ``train_one_epoch`` and ``evaluate_epoch`` are the functions the
benchmark times, so what it measures is what ``vggnet train`` runs.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..data.datasets import BUILTIN as BUILTIN_DATA
from ..device import autocast_for, describe_precision, pick_device, resolve_precision
from ..errors import ConfigError, TrainingError
from ..evaluation.metrics import evaluate
from ..evaluation.protocols import evaluate_protocol
from ..io import write_json
from ..run import (Preprocessing, RunMetadata, absolute_path, git_commit, save_checkpoint,
                   software_versions)
from .averaging import Lookahead, build_ema
from .config import TrainConfig, check_run_dir, validate
from .distributed import DistContext, init_distributed, restarted_by_torchrun, shutdown, world_size
from .history import write_history
from ..faults import fault_point
from .hooks import Hook, recipe_hooks
from .transfer import describe as describe_transfer
from .mixing import BatchMixer
from .setup import (Data, apply_conv_algorithm, build_loaders, build_model, build_optimizer,
                    build_schedule, test_scale, trainable_later)
from .state import TrainState, load_state, save_state

log = logging.getLogger("vggnet")


@dataclass
class RunResult:
    out: Path
    history: list[dict]
    best_top1: float
    interrupted: bool = False
    main: bool = True              # False in the processes of rank > 0 under torchrun


@dataclass
class Step:
    """How one optimizer step runs: the model to call (maybe DDP- or compile-wrapped), the
    loss, and the precision context."""
    run_model: nn.Module
    criterion: nn.Module
    autocast: object
    sync_every: int = 1           # read the loss back (NaN check, progress) every this many steps
    mix: BatchMixer | None = None  # mixup / CutMix of each training batch


@dataclass
class EpochSums:
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    seconds: float = 0.0
    images: int = 0                # trained in this call (a resumed epoch counts its own)
    interrupted: bool = False
    steps_done: int = 0            # steps of the epoch finished so far


def train_step(state: TrainState, step: Step, x: torch.Tensor, y: torch.Tensor):
    """Forward, backward, optimizer step, schedule, averages; returns (loss, logits)."""
    with step.autocast():
        logits = step.run_model(x)
        loss = step.criterion(logits.float(), y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.schedule.step()
    if state.lookahead is not None:
        state.lookahead.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    return loss.detach(), logits.detach()


def count_correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct predictions in a batch. ``target`` is class indices, or class probabilities
    from mixup / CutMix: a prediction then counts by its class's share of the blend (lam for
    the image's own class, 1 - lam for its partner's; Zhang et al.'s scoring). Counting the own
    label alone would score about half the batches against a class that is barely visible,
    since Beta(0.2, 0.2) draws lam near 0 as often as near 1."""
    pred = logits.argmax(1)
    if target.ndim == 1:
        return (pred == target).sum()
    return target.gather(1, pred[:, None]).sum()


def train_one_epoch(state: TrainState, step: Step, loader, *, hooks=(), progress=None,
                    stop=None, limit: int | None = None) -> EpochSums:
    """One epoch (from ``state.step`` on, when resuming in its middle), or its first ``limit``
    steps. Stops cleanly after the current step when ``stop.requested`` is set. With mixup or
    CutMix, training accuracy is scored against the blended targets (``count_correct``)."""
    state.model.train()
    for hook in hooks:
        hook.on_epoch_start(state.model, state.epoch)
    device = next(state.model.parameters()).device
    sums = EpochSums(torch.zeros((), device=device), torch.zeros((), device=device))
    skip = state.step
    if skip and state.partial:  # resuming in the middle of this epoch
        sums.loss_sum += state.partial["loss_sum"].to(device)
        sums.correct += state.partial["correct"].to(device)
        sums.seen = int(state.partial["seen"])
    total = len(loader) if limit is None else min(len(loader), skip + limit)
    loader.set_epoch(state.epoch)
    batches = loader.batches(skip)
    bar = progress(batches, total=len(loader), initial=skip) if progress else batches
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(bar, start=skip):
        x, target = (x, y) if step.mix is None else step.mix(x, y, state.epoch, i)
        loss, logits = train_step(state, step, x, target)
        fault_point("train.step")
        sums.loss_sum += loss * len(y)
        sums.correct += count_correct(logits, target)
        sums.seen += len(y)
        sums.images += len(y)
        sums.steps_done = i + 1
        if (i + 1) % step.sync_every == 0 or i + 1 == len(loader):
            _check_loss(loss.item(), state.epoch, i, bar, sums, t0)
        if i + 1 >= total:
            break
        if stop is not None and stop.requested:
            sums.interrupted = True
            break
    sums.seconds = time.perf_counter() - t0
    return sums


def _check_loss(current: float, epoch: int, i: int, bar, sums: EpochSums, t0: float) -> None:
    if not math.isfinite(current):
        raise TrainingError(
            f"the loss became {current} at epoch {epoch + 1}, step {i + 1}; the last good "
            f"checkpoint (epoch {epoch}) is kept. Lower --lr, or use warm-up (--warmup-epochs)")
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(loss=f"{sums.loss_sum.item() / sums.seen:.3f}",
                        acc=f"{sums.correct.item() / sums.seen:.3f}",
                        ips=f"{sums.images / (time.perf_counter() - t0):.0f}")


def evaluate_epoch(model: nn.Module, data: Data, cfg: TrainConfig, device, autocast) -> dict:
    """The test set after an epoch: at the run's single test scale Q when it trains with scale
    augmentation (in-memory sets), else straight from the test loader."""
    if not cfg.scale or data.test_set is None:  # streamed sets: the loader rescales to Q itself
        return evaluate(model, data.test_loader, len(data.classes), autocast=autocast,
                        tta=cfg.tta, tta_shift=cfg.tta_shift)
    return evaluate_protocol(model, data.test_set.images, data.test_set.labels,
                             protocol="single", scales=[test_scale(cfg, data.input_size)],
                             crop=data.input_size, flip=cfg.tta, mean=data.mean, std=data.std,
                             batch_size=cfg.eval_batch_size, device=device, autocast=autocast,
                             shift=cfg.tta_shift)


# --- the run --------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> RunResult:
    """Run (or resume) a training run; with torchrun, one process per device, and only rank 0
    logs and writes files."""
    validate(cfg)
    cfg.resume = cfg.resume or restarted_by_torchrun(cfg.out)
    check_run_dir(cfg)
    world = world_size()  # checked before joining the group: every process fails at once
    if world > 1 and cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} (the global batch) must be divisible "
                          f"by the {world} processes")
    ctx, device = init_distributed(pick_device(cfg.device))
    try:
        return _Run(cfg, ctx, device).run()
    finally:
        shutdown()


class _Run:
    """One run's setup and its epochs; every piece is built by a function of setup.py."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, device: torch.device):
        self.cfg, self.ctx, self.device, self.out = cfg, ctx, device, Path(cfg.out)
        self.precision = describe_precision(device, cfg.precision)
        log.info(f"training on {device} in {self.precision}")
        for line in describe_transfer(cfg):  # settings lent by a run or the finetune recipe
            log.info(line)
        if cfg.unfreeze_after and ctx.enabled:
            raise ConfigError("unfreeze_after changes which parameters train, which "
                              "DistributedDataParallel fixes at its start: use it in one "
                              "process")
        _set_determinism(cfg, device)
        torch.manual_seed(cfg.seed)
        data_gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
        self.data = build_loaders(cfg, ctx, device, data_gen)
        model = build_model(cfg, len(self.data.classes), self.data.channels)
        self.hooks: list[Hook] = recipe_hooks(cfg, model)
        for hook in self.hooks:
            hook.on_train_start(model, self.data, resumed=cfg.resume)
        memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(device, memory_format=memory)
        if apply_conv_algorithm(model, cfg, device):
            log.info("3x3 convolutions of small maps run by Winograd's F(2x2,3x3) "
                     f"(conv_algorithm {cfg.conv_algorithm})")
        if ctx.enabled and cfg.sync_bn:  # before the optimizer: the BN parameters are replaced
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.state = _new_state(cfg, model, len(self.data.loader), data_gen, device)
        self.step = Step(_wrap(model, cfg, ctx, device),
                         nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                         autocast_for(device, cfg.precision),
                         sync_every=1 if device.type == "cpu" else 50,
                         mix=_mixer(cfg, len(self.data.classes)))
        self.meta = _metadata(cfg, self.data)
        self.meta.compute = {"device": str(device), "precision": resolve_precision(device,
                                                                                   cfg.precision),
                             "precision_reason": self.precision}

    def run(self) -> RunResult:
        cfg, state, main = self.cfg, self.state, self.ctx.is_main
        if cfg.resume:
            state.load_state_dict(load_state(self.out / "last.state.pt"))
            log.info(f"resuming {self.out} after epoch {state.epoch}"
                     + (f", step {state.step}" if state.step else ""))
            if state.epoch >= cfg.epochs:
                log.info(f"{self.out} already finished its {cfg.epochs} epochs")
        if not main:
            log.setLevel(logging.WARNING)
        if main:
            _prepare_out(self.out, cfg)
        with _GracefulStop() as stop:  # Ctrl-C ends the current step, saves, and returns
            while state.epoch < cfg.epochs:
                sums = train_one_epoch(state, self.step, self.data.loader, hooks=self.hooks,
                                       progress=_progress(cfg, state.epoch) if main else None,
                                       stop=stop)
                if sums.interrupted and sums.steps_done < len(self.data.loader):
                    return self._interrupted(sums)
                self._end_epoch(sums)
                if stop.requested and state.epoch < cfg.epochs:
                    log.warning(f"interrupted after epoch {state.epoch}: checkpoint saved in "
                                f"{self.out}; continue with --resume")
                    return self._result(interrupted=True)
                if cfg.stop_after is not None and cfg.stop_after <= state.epoch < cfg.epochs:
                    log.info(f"stopped after epoch {state.epoch} as asked; continue with --resume")
                    return self._result(interrupted=True)
        return self._result()

    def _interrupted(self, sums: EpochSums) -> RunResult:
        """Ctrl-C in the middle of an epoch: the step is finished; save where we are."""
        state = self.state
        state.step = sums.steps_done
        state.partial = {"loss_sum": sums.loss_sum.cpu(), "correct": sums.correct.cpu(),
                         "seen": sums.seen}
        if self.ctx.is_main:
            save_state(self.out / "last.state.pt", state.state_dict())
        log.warning(f"interrupted at epoch {state.epoch + 1}, step {state.step}: state saved "
                    f"in {self.out}; continue with --resume")
        return self._result(interrupted=True)

    def _end_epoch(self, sums: EpochSums) -> None:
        """Evaluate, log, let the plateau rule see the accuracy, then checkpoint: the resume
        state first, then the weights for evaluation; each file atomic."""
        cfg, state = self.cfg, self.state
        t_eval = time.perf_counter()
        eval_model = state.ema.module if state.ema is not None else self.step.run_model
        result = evaluate_epoch(eval_model, self.data, cfg, self.device, self.step.autocast)
        record = {"epoch": state.epoch + 1, "lr": state.optimizer.param_groups[0]["lr"],
                  "train_loss": sums.loss_sum.item() / sums.seen,
                  "train_acc": sums.correct.item() / sums.seen, "test_loss": result["loss"],
                  "test_top1": result["top1"], "test_top5": result["top5"],
                  "train_seconds": round(sums.seconds, 2),
                  "eval_seconds": round(time.perf_counter() - t_eval, 2),
                  "images_per_second": round(sums.images / max(sums.seconds, 1e-9), 1)}
        if cfg.crop_start is not None:  # progressive resizing: this epoch's training crop
            record["crop"] = self.data.loader.crop_size
        if state.schedule.epoch_end(result["top1"]):
            log.info(f"test top-1 stopped improving: learning rate lowered to "
                     f"{state.optimizer.param_groups[0]['lr']:.3g}")
        state.history.append(record)
        log.info(f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
                 f"acc {100 * record['train_acc']:.2f}% | test loss {record['test_loss']:.4f} "
                 f"top-1 {100 * record['test_top1']:.2f}% top-5 {100 * record['test_top5']:.2f}% "
                 f"| {record['images_per_second']:.0f} img/s"
                 + (f" at {record['crop']} px" if "crop" in record else ""))
        improved = result["top1"] > state.best_top1
        state.best_top1 = max(state.best_top1, result["top1"])
        state.epoch, state.step, state.partial = state.epoch + 1, 0, None
        if self.ctx.is_main:
            self._checkpoint(record, improved)

    def _checkpoint(self, record: dict, improved: bool) -> None:
        state, out = self.state, self.out
        save_state(out / "last.state.pt", state.state_dict())
        self.meta.epoch, self.meta.metrics = state.epoch, dict(record)
        save_checkpoint(state.eval_model, out / "last.safetensors", self.meta)
        if improved:
            save_checkpoint(state.eval_model, out / "best.safetensors", self.meta)
        write_history(out, state.history)

    def _result(self, interrupted: bool = False) -> RunResult:
        s = self.state
        return RunResult(self.out, s.history, s.best_top1, interrupted=interrupted,
                         main=self.ctx.is_main)


def _mixer(cfg: TrainConfig, num_classes: int) -> BatchMixer | None:
    mixer = BatchMixer(num_classes, mixup=cfg.mixup, cutmix=cfg.cutmix, seed=cfg.seed)
    return mixer if mixer.enabled else None


def _set_determinism(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def _new_state(cfg: TrainConfig, model: nn.Module, steps: int, data_gen, device) -> TrainState:
    optimizer = build_optimizer(cfg, model, device)
    lookahead = (Lookahead(model, cfg.lookahead, cfg.lookahead_alpha,
                           ramp_steps=cfg.epochs * steps if cfg.lookahead_ramp else 0,
                           later=trainable_later(model, cfg))
                 if cfg.lookahead else None)
    return TrainState(model, optimizer, build_schedule(cfg, optimizer, steps), data_gen,
                      ema=build_ema(model, cfg.ema) if cfg.ema else None, lookahead=lookahead)


def _wrap(model: nn.Module, cfg: TrainConfig, ctx: DistContext, device) -> nn.Module:
    """DDP across processes, torch.compile when asked; the state keeps the bare module."""
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if cfg.compile else model


def _metadata(cfg: TrainConfig, data: Data) -> RunMetadata:
    pre = Preprocessing(mean=data.mean, std=data.std, input_size=data.input_size,
                        test_scale=test_scale(cfg, data.input_size), channels=data.channels,
                        resize="shorter side to test_scale, then centre crop of input_size")
    return RunMetadata(classes=data.classes, preprocessing=pre, config=cfg.to_dict(),
                       data={"source": cfg.data, "train_images": data.n_train,
                             "test_images": data.n_test,
                             # as resolved here, for tools run later from another directory
                             "source_path": None if cfg.data.lower() in BUILTIN_DATA
                             else absolute_path(cfg.data),
                             "root": absolute_path(cfg.data_root)},
                       versions=software_versions(), git_commit=git_commit())


def _prepare_out(out: Path, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # half-written files of a run that was killed
        stale.unlink(missing_ok=True)
    write_json(out / "config.json", cfg.to_dict())


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


def _progress(cfg: TrainConfig, epoch: int):
    """A progress-bar factory for one epoch, or None."""
    if not cfg.progress:
        return None
    from tqdm import tqdm

    def bar(batches, total: int, initial: int):
        return tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                    dynamic_ncols=True, disable=None, total=total, initial=initial)

    return bar
