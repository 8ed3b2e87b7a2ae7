"""Weight averaging during training: an exponential moving average and Lookahead."""

from __future__ import annotations

import torch
import torch.nn as nn


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
    (momentum) is kept. Only trainable parameters take part, and those frozen now that
    train later (``later``: ids, a backbone unfrozen after N epochs); batch-norm statistics
    do not."""

    def __init__(self, model: nn.Module, k: int, alpha: float, ramp_steps: int = 0,
                 later: set[int] = frozenset()):
        self.params = [p for p in model.parameters() if p.requires_grad or id(p) in later]
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
