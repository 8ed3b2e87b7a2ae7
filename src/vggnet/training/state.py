"""Everything a run needs to continue exactly, in one object with one ``state_dict()``.

``last.state.pt`` holds it, read back with ``torch.load(weights_only=True)`` (tensors, numbers,
strings, lists and dicts only: no code runs when a state file is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError, WeightsError
from ..io import atomic_write
from .averaging import Lookahead
from .schedule import LRSchedule


@dataclass
class TrainState:
    """The model (never a DDP or torch.compile wrapper), the optimizer, the learning-rate
    schedule, the averages, the RNG of the data, and where the run stands."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    data_gen: torch.Generator                     # shuffling and augmentation draw from it
    ema: nn.Module | None = None                  # AveragedModel, evaluated and saved if set
    lookahead: Lookahead | None = None
    epoch: int = 0                                # epochs finished
    step: int = 0                                 # steps finished in the current epoch
    best_top1: float = -1.0
    history: list[dict] = field(default_factory=list)
    partial: dict | None = None                   # loss/accuracy sums of an unfinished epoch

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the average of the weights when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                 "data_rng": self.data_gen.get_state(), "epoch": self.epoch, "step": self.step,
                 "best_top1": self.best_top1, "history": self.history}
        if self.partial is not None:
            state["partial"] = self.partial
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.lookahead is not None:
            state["lookahead"] = self.lookahead.state_dict()
        if torch.cuda.is_available() and next(self.model.parameters()).is_cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(next(self.model.parameters()).device)
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None and "ema" not in state:
            raise ConfigError("--resume with ema: the run was trained without ema; resume it "
                              "with --ema 0")
        if self.lookahead is not None and "lookahead" not in state:
            raise ConfigError("--resume with lookahead: the run was trained without it; resume "
                              "it with --lookahead 0")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and next(self.model.parameters()).is_cuda:
            torch.cuda.set_rng_state(state["cuda_rng"], next(self.model.parameters()).device)
        self.data_gen.set_state(state["data_rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        self.epoch, self.step = int(state["epoch"]), int(state.get("step", 0))
        self.best_top1, self.history = float(state["best_top1"]), list(state["history"])
        self.partial = state.get("partial")


def save_state(path: Path, state: dict) -> Path:
    return atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a broken or hostile file
        raise WeightsError(f"cannot resume from {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if "schedule" not in state:
        raise WeightsError(f"cannot resume from {path}: it was written by a vggnet before 0.2 "
                           "(its schedule state has another form); start the run afresh, or "
                           "continue it from its weights with --weights")
    return state
