"""The learning-rate schedule: one object that owns every change of the learning rate.

A schedule that recomputes the rate from its base every step (a ``LambdaLR``) silently undoes
any other scheduler on the same optimizer, so a plateau rule beside it never lowers the rate.
Here one object sets each parameter group's rate to

    base_lr(group) * factor(step) * plateau_scale

where ``factor`` is the per-step shape (warm-up, one-cycle, cosine, step decay, constant) and
``plateau_scale`` is lowered by ``gamma`` whenever the watched metric stops improving for more
than ``patience`` epochs (the rule of ``torch.optim.lr_scheduler.ReduceLROnPlateau``, mode
"max", relative threshold). What the optimizer holds is always the rate in use, and that is
what the history logs.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("step", "cosine", "onecycle", "constant", "plateau")


def lr_factor(schedule: str, step: int, total_steps: int, steps_per_epoch: int, *,
              warmup_epochs: float = 0.0, step_epochs: int = 30, gamma: float = 0.1,
              epochs: int = 1) -> float:
    """Multiplier of the base rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    t = step / max(1, total_steps)
    if schedule == "onecycle":
        # linear from 0.1 up to 1 over the warm-up (default a quarter of the run), then to 0
        peak = (warmup_epochs / epochs) if warmup_epochs else 0.25
        if t < peak:
            return 0.1 + 0.9 * t / peak
        return max(0.0, (1 - t) / (1 - peak))
    warm = int(warmup_epochs * steps_per_epoch)
    if warm and step < warm:
        return (step + 1) / warm
    if schedule == "cosine":
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if schedule == "step":  # the paper's divide-by-10, at fixed epochs
        return gamma ** (step // (step_epochs * steps_per_epoch))
    return 1.0  # constant, and plateau (lowered by `epoch_end`)


class LRSchedule:
    """Sets the optimizer's learning rates; call :meth:`step` after every optimizer step and
    :meth:`epoch_end` with the epoch's test accuracy (only the plateau schedule reads it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, *, epochs: int,
                 steps_per_epoch: int, warmup_epochs: float = 0.0, step_epochs: int = 30,
                 gamma: float = 0.1, patience: int = 2, threshold: float = 1e-4):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
        self.optimizer, self.schedule = optimizer, schedule
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.warmup_epochs, self.step_epochs, self.gamma = warmup_epochs, step_epochs, gamma
        self.patience, self.threshold = patience, threshold
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.steps = 0                      # optimizer steps taken
        self.plateau_scale = 1.0            # gamma ** (times the plateau rule fired)
        self.best: float | None = None      # best metric seen (plateau)
        self.bad_epochs = 0                 # epochs since it last improved (plateau)
        self._apply()

    def factor(self) -> float:
        return lr_factor(self.schedule, self.steps, self.epochs * self.steps_per_epoch,
                         self.steps_per_epoch, warmup_epochs=self.warmup_epochs,
                         step_epochs=self.step_epochs, gamma=self.gamma,
                         epochs=self.epochs) * self.plateau_scale

    def _apply(self) -> None:
        f = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def epoch_end(self, metric: float) -> bool:
        """The plateau rule (a no-op for the other schedules): True when it lowered the rate."""
        if self.schedule != "plateau":
            return False
        if self.best is None or metric > self.best * (1 + self.threshold):
            self.best, self.bad_epochs = metric, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience:
            return False
        self.plateau_scale *= self.gamma
        self.bad_epochs = 0
        self._apply()
        return True

    def state_dict(self) -> dict:
        return {"steps": self.steps, "plateau_scale": self.plateau_scale, "best": self.best,
                "bad_epochs": self.bad_epochs, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        self.base_lrs = list(state.get("base_lrs", self.base_lrs))
        self._apply()


def progressive_size(epoch: int, epochs: int, start: int, final: int, ramp: float = 0.75,
                     multiple: int = 8) -> int:
    """Progressive resizing (fast.ai's DAWNBench ImageNet runs; FFCV's ResNet recipes): the
    training crop in ``epoch`` (0-based) grows linearly from ``start`` in the first epoch to
    ``final``, which it reaches after ``ramp`` of the epochs and keeps; sizes are rounded to
    ``multiple`` pixels so that only a few input shapes occur. Small early epochs cost
    (start / final)^2 of a full one."""
    ramp_epochs = max(1, round(ramp * epochs))
    if epoch >= ramp_epochs or start >= final:
        return final
    size = start + (final - start) * epoch / ramp_epochs
    return min(final, max(multiple, int(round(size / multiple)) * multiple))


def progressive_sizes(epochs: int, start: int, final: int, scale: tuple[int, int] | None,
                      ramp: float = 0.75):
    """For a loader: epoch -> (crop, (S_min, S_max)), the training scales S shrunk with the
    crop so that objects keep their size relative to it."""
    def sizes(epoch: int):
        crop = progressive_size(epoch, epochs, start, final, ramp)
        if scale is None:
            return crop, None
        s_min, s_max = (max(crop, round(s * crop / final)) for s in scale)
        return crop, (s_min, max(s_min, s_max))
    return sizes
