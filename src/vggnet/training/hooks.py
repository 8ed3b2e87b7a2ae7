"""What some recipes add to the generic loop, kept out of it: each hook is called at the
start of the run and of every epoch."""

from __future__ import annotations

import logging

import torch.nn as nn

from .config import TrainConfig

log = logging.getLogger("vggnet")


class Hook:
    def on_train_start(self, model: nn.Module, data, resumed: bool) -> None:
        """Once, before the model moves to its device and before any step."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """After ``model.train()``, before the epoch's first step."""


class Whitening(Hook):
    """A whitening first layer (``vgg_speed``): its weights are set once from the covariance of
    the training images' patches and never trained; its bias trains for the first
    ``bias_epochs`` epochs only (airbench94's recipe)."""

    def __init__(self, cfg: TrainConfig):
        self.bias_epochs = cfg.whiten_bias_epochs
        self.keep_weights = bool(cfg.weights or cfg.init_from)
        # a frozen backbone holds the whitening bias too, until it is unfrozen (if ever)
        self.frozen_until = (0 if cfg.freeze != "features" else
                             cfg.unfreeze_after if cfg.unfreeze_after else float("inf"))

    def on_train_start(self, model, data, resumed):
        if not (self.keep_weights or resumed):
            model.init_whitening(data.whitening_sample())
            log.info("whitening layer set from the covariance of the training images' patches")

    def on_epoch_start(self, model, epoch):
        trains = self.frozen_until <= epoch < self.bias_epochs
        model.features.whiten.bias.requires_grad_(trains)


class FrozenFeatures(Hook):
    """Fine-tuning the head only: the backbone's batch-norm statistics stay as loaded. With
    ``unfreeze_after``, from that epoch on the backbone trains too (at its own learning rate,
    set by the optimizer's groups), batch norm included; a resumed run unfreezes it again.
    Only what the freeze stopped trains again (``model.frozen_backbone``): parameters the
    model keeps fixed by design stay fixed."""

    def __init__(self, unfreeze_after: int | None = None):
        self.unfreeze_after = unfreeze_after

    def on_epoch_start(self, model, epoch):
        if self.unfreeze_after is None or epoch < self.unfreeze_after:
            model.features.eval()
            return
        frozen = [p for p in getattr(model, "frozen_backbone", ()) if not p.requires_grad]
        if frozen:
            for p in frozen:
                p.requires_grad_(True)
            log.info(f"epoch {epoch + 1}: the backbone is unfrozen and trains from now on")


def recipe_hooks(cfg: TrainConfig, model: nn.Module) -> list[Hook]:
    hooks: list[Hook] = []
    if cfg.freeze == "features":
        hooks.append(FrozenFeatures(cfg.unfreeze_after))
    if getattr(model, "has_whitening", False):  # after the freeze: its bias rule wins
        hooks.append(Whitening(cfg))
    return hooks
