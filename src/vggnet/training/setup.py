"""Setting a run up: device, data, model, optimizer and schedule, each from the config.

Each builder reads the :class:`~vggnet.training.config.TrainConfig` and nothing else, so the
benchmark (``vggnet bench``) and the tests build exactly what ``vggnet train`` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..data import ImageTensors, TensorLoader, load_splits
from ..device import uses_bf16
from ..errors import ConfigError, DataError
from ..models import create_model, init_from_shallower, load_weights
from ..models.normalization import take_rgb_input
from ..models.hub import is_published, pretrained_file, published_model
from ..run import resolve_checkpoint
from .config import TrainConfig
from .distributed import DistContext
from .schedule import LRSchedule, progressive_sizes
from .transfer import parse_normalize

log = logging.getLogger("vggnet")


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
    if cfg.stream or _too_big_for_memory(cfg):
        from ..data.stream import IMAGENET_MEAN, IMAGENET_STD, FolderImages, StreamLoader, stream_splits

        train_dir, test_dir = stream_splits(cfg.data)
        crop = cfg.crop_size
        s_min = cfg.scale or crop
        s_max = cfg.scale_max or s_min
        if s_min < crop:
            raise ConfigError(f"scale {s_min} is smaller than the crop size {crop}")
        train_images = FolderImages(train_dir, train=True, crop=crop, scale=(s_min, s_max),
                                    flip=cfg.flip)
        test_images = FolderImages(test_dir, train=False, crop=crop,
                                   test_scale=test_scale(cfg, crop))
        if test_images.classes != train_images.classes:
            raise DataError(f"{cfg.data}: the class folders of {train_dir.name}/ and "
                            f"{test_dir.name}/ differ")
        mean, std = parse_normalize(cfg.normalize) or (IMAGENET_MEAN, IMAGENET_STD)
        common = dict(mean=list(mean), std=list(std), device=device,
                      channels_last=cfg.channels_last, workers=cfg.workers)
        loader = StreamLoader(train_images, per_rank, train=True, lighting=cfg.lighting,
                              generator=data_gen, rank=ctx.rank, world_size=ctx.world_size,
                              shuffle_seed=cfg.seed, **common)
        test_loader = StreamLoader(test_images, cfg.eval_batch_size, **common)
        return Data(loader, test_loader, train_images.classes, list(mean), list(std), 3,
                    crop, len(train_images), len(test_images))

    # decoded once into uint8 tensors, kept on the device
    train_set, test_set = build_data(cfg)
    mean, std = parse_normalize(cfg.normalize) or train_set.stats()  # a run's, or the data's
    loader = TensorLoader(train_set, per_rank, mean=mean, std=std,
                          train=True, rank=ctx.rank, world_size=ctx.world_size,
                          crop_padding=cfg.crop_padding, flip=cfg.flip, cutout=cfg.cutout,
                          device=device, generator=data_gen, drop_last=len(train_set) > cfg.batch_size,
                          channels_last=cfg.channels_last, lighting=cfg.lighting,
                          scale=(cfg.scale, cfg.scale_max or cfg.scale) if cfg.scale else None,
                          crop_size=cfg.crop_size, shuffle_seed=cfg.seed,
                          alternate_flip=cfg.alternate_flip, sizes=_sizes(cfg))
    input_size = cfg.crop_size or int(train_set.images.shape[-1])
    if cfg.scale and min(cfg.scale, input_size) < input_size:
        raise ConfigError(f"scale {cfg.scale} is smaller than the crop size {input_size}")
    test_loader = TensorLoader(test_set, cfg.eval_batch_size, mean=mean, std=std, device=device,
                               channels_last=cfg.channels_last)
    return Data(loader, test_loader, train_set.classes, mean, std, int(train_set.images.shape[1]),
                input_size, len(train_set), len(test_set), test_set, train_set)


def _sizes(cfg: TrainConfig):
    """Progressive resizing's epoch -> (crop, scales), or None (one size throughout)."""
    if cfg.crop_start is None:
        return None
    return progressive_sizes(cfg.epochs, cfg.crop_start, cfg.crop_size,
                             (cfg.scale, cfg.scale_max or cfg.scale), cfg.crop_ramp)


def memory_budget() -> int:
    """Bytes a decoded data set may take in RAM: VGGNET_MEMORY_GB, else half of the memory
    available now."""
    import os

    if os.environ.get("VGGNET_MEMORY_GB"):
        return int(float(os.environ["VGGNET_MEMORY_GB"]) * 2**30)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 8 * 2**30


def _too_big_for_memory(cfg: TrainConfig) -> bool:
    """In memory or streamed, chosen by size and said: a folder whose decoded images would
    not fit the budget is streamed (decoded every epoch by worker processes)."""
    from ..data.survey import estimate_decoded_bytes

    est = estimate_decoded_bytes(cfg.data, cfg.image_size)
    if est is None:
        return False
    n, size = est
    budget = memory_budget()
    gb = size / 2**30
    if size <= budget:
        log.info(f"data in memory: {n} images at {cfg.image_size} px = {gb:.2f} GB as uint8 "
                 f"(budget {budget / 2**30:.1f} GB)")
        return False
    if not Path(cfg.data).expanduser().is_dir():
        raise DataError(f"{cfg.data}: {n} images at {cfg.image_size} px would take {gb:.1f} GB "
                        f"in memory, over the budget of {budget / 2**30:.1f} GB (half the free "
                        "RAM, or VGGNET_MEMORY_GB): extract the archive and train with "
                        "--stream, or lower --image-size")
    if not cfg.crop_size:
        raise ConfigError(f"{cfg.data}: {gb:.1f} GB decoded is over the memory budget "
                          f"({budget / 2**30:.1f} GB), so it must be streamed, which needs "
                          "--crop-size (and --scale)")
    log.info(f"data streamed: {n} images at {cfg.image_size} px would take {gb:.1f} GB in "
             f"memory, over the budget of {budget / 2**30:.1f} GB")
    return True


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int = 3) -> nn.Module:
    options = {"init": cfg.init} if cfg.init else {}  # none: the model's own
    model = create_model(cfg.model, num_classes=num_classes, in_channels=in_channels,
                         width=cfg.width, head=cfg.head, dropout=cfg.dropout, fc_dim=cfg.fc_dim,
                         **options)
    if cfg.weights:
        path = cfg.weights
        if is_published(path):  # published weights, verified
            path = pretrained_file(published_model(path, cfg.model))
        elif Path(path).is_dir():
            path = resolve_checkpoint(path)
        report = load_weights(model, path)
        log.info(f"loaded {len(report.loaded)} tensors from {cfg.weights} ({report.format} format)")
        if take_rgb_input(model):  # the data pipeline hands RGB in [0, 1] to normalize
            log.info("the weights read BGR in [0, 255] (Keras' 'caffe' inputs): their first "
                     "convolution now reads RGB, and normalize %s feeds it what they expect",
                     cfg.normalize)
    if cfg.init_from:
        copied = init_from_shallower(model, resolve_checkpoint(cfg.init_from)
                                     if Path(cfg.init_from).is_dir() else cfg.init_from)
        log.info(f"initialised {', '.join(copied)} from {cfg.init_from}")
    if cfg.freeze == "features":
        model.frozen_backbone = freeze_backbone(model)
    return model


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Stop the convolutional layers' training; returns the parameters it froze, the ones
    that ``unfreeze_after`` may train again. Parameters the model itself keeps fixed (a
    whitening layer's weights, batch-norm scales built without a weight to learn) are not
    among them: unfreezing must not start training what the model never trains."""
    frozen = [p for p in model.features.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def trainable_later(model: nn.Module, cfg: TrainConfig) -> set[int]:
    """ids of the parameters frozen now that train from epoch ``unfreeze_after`` on."""
    return {id(p) for p in getattr(model, "frozen_backbone", ())} if cfg.unfreeze_after \
        else set()


def apply_conv_algorithm(model: nn.Module, cfg: TrainConfig, device: torch.device) -> int:
    """Run 3x3 convolutions of small maps by Winograd's F(2x2, 3x3) where that was measured
    faster: bf16 training steps on the CPU, layers of >= 256 channels on maps of <= 8x8
    (<= 4x4 on CPUs with AMX, whose direct convolutions are faster; training/winograd.py).
    ``winograd`` forces it for every 3x3 convolution on maps of <= 8x8, in any precision,
    evaluation included. Parameters are shared, so checkpoints are unchanged.
    Returns how many convolutions may use it."""
    from .winograd import auto_max_pixels, convert_to_winograd

    if cfg.conv_algorithm == "winograd":
        return convert_to_winograd(model, min_channels=1, dtypes=None, backward_only=False)
    if cfg.conv_algorithm == "auto" and device.type == "cpu" and uses_bf16(device,
                                                                           cfg.precision):
        return convert_to_winograd(model, max_pixels=auto_max_pixels())
    return 0


def test_scale(cfg: TrainConfig, input_size: int) -> int:
    """The paper's single test scale: Q = S for fixed S, Q = (S_min + S_max) / 2 if jittered."""
    if not cfg.scale:
        return input_size
    return (cfg.scale + (cfg.scale_max or cfg.scale)) // 2


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    """SGD (Nesterov) or AdamW; no weight decay on batch-norm and bias parameters; the
    batch-norm biases' learning rate multiplied by ``norm_bias_lr``, the convolutional layers'
    by ``backbone_lr``. A backbone frozen now but unfrozen later (``unfreeze_after``) is in the
    optimizer from the start: without gradients its parameters are skipped until then."""
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    features = getattr(model, "features", None)
    backbone = {id(p) for p in features.parameters()} if features is not None else set()
    split = cfg.backbone_lr != 1.0  # backbone and head in groups of their own
    later = trainable_later(model, cfg)
    groups: dict[tuple[str, bool], list] = {}  # (kind, in the backbone) -> parameters
    for p in model.parameters():
        if not (p.requires_grad or id(p) in later):
            continue
        kind = "fast" if id(p) in norm_biases and cfg.norm_bias_lr != 1.0 else \
            "no_decay" if p.ndim <= 1 else "decay"
        groups.setdefault((kind, split and id(p) in backbone), []).append(p)
    order = {"decay": 0, "no_decay": 1, "fast": 2}  # a resumed run's state needs this order
    param_groups = [{"params": groups[key],
                     "weight_decay": cfg.weight_decay if key[0] == "decay" else 0.0,
                     "lr": cfg.lr * (cfg.norm_bias_lr if key[0] == "fast" else 1.0)
                     * (cfg.backbone_lr if key[1] else 1.0)}
                    for key in sorted(groups, key=lambda k: (k[1], order[k[0]]))]
    if cfg.optimizer == "sgd":
        kind, options = torch.optim.SGD, {"momentum": cfg.momentum,
                                          "nesterov": cfg.nesterov and cfg.momentum > 0}
    else:
        kind, options = torch.optim.AdamW, {}
    # fused: one kernel over all parameters per step, on the CPU too (there it measured 6x
    # faster than foreach for VGG-16-BN's SGD step, with bit-identical results); a device
    # without fused kernels gets foreach
    try:
        return kind(param_groups, lr=cfg.lr, fused=True, **options)
    except RuntimeError:
        return kind(param_groups, lr=cfg.lr, foreach=True, **options)


def build_schedule(cfg: TrainConfig, optimizer, steps_per_epoch: int) -> LRSchedule:
    """The one object that sets the learning rate (warm-up, shape and plateau rule alike)."""
    return LRSchedule(optimizer, cfg.schedule, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                      warmup_epochs=cfg.warmup_epochs, step_epochs=cfg.step_epochs,
                      gamma=cfg.step_gamma, patience=cfg.plateau_patience)
