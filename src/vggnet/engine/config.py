"""Training configuration in layers: defaults < recipe file (TOML) < command-line flags.

The resolved configuration is saved with every run (``config.json``) and in every checkpoint.
"""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A recipe or flag that is not valid; the message names the key and what to do."""


@dataclass
class TrainConfig:
    # --- model ---
    model: str = "vgg11_bn"            # a name from `vggnet models`
    width: float = 1.0                 # channel multiplier; 1.0 is the paper's
    head: str = "linear"               # classifier (FC-4096 x2), conv (fully convolutional), linear
    dropout: float | None = None       # None: 0.5 for the FC heads, 0 for the linear head
    fc_dim: int = 4096                 # width of fc6/fc7
    init: str | None = None            # kaiming, paper (N(0, 1e-2)), xavier, dirac; none: the
                                       #   model's own (kaiming; dirac for vgg_speed)
    weights: str | None = None         # initial weights: checkpoint, torchvision/timm file, or imagenet
    init_from: str | None = None       # a trained shallower net (the paper's init from net A)
    freeze: str = "none"               # none, or features (train the head only)
    # --- data ---
    data: str = "cifar10"              # cifar10, cifar100, digits, or an ImageFolder path / tar
    data_root: str | None = None       # where cifar10/cifar100 live (default ~/.cache/vggnet/data)
    download: bool = False             # fetch the official release if absent (checksum verified)
    image_size: int | None = None      # resize images to this (None: the data set's own size)
    val_fraction: float = 0.1          # held out when the data has no test/ or val/ split
    train_subset: int | None = None    # use only this many training images (class-stratified)
    test_subset: int | None = None     # evaluate on this many test images
    crop_padding: int = 4              # random crop after reflect-padding by this many pixels
    flip: bool = True                  # random horizontal flip
    alternate_flip: bool = False       # flip each image in every other epoch (random in the
                                       #   first) instead of tossing a coin every epoch
    cutout: int = 0                    # side of the cutout square in pixels (0: off)
    scale: int | None = None           # the paper's training scale S: shorter side to S, then a
    scale_max: int | None = None       #   random crop; S jittered in [scale, scale_max] if set
    crop_size: int | None = None       # network input size with `scale` (default: image size)
    lighting: float = 0.0              # AlexNet's PCA colour shift, std of alpha (paper: 0.1)
    stream: bool = False               # decode a folder's images every epoch with worker
                                       #   processes (ImageNet-sized sets that do not fit in RAM)
    workers: int = 4                   # decoding processes when streaming
    # --- optimisation ---
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"             # sgd (Nesterov momentum) or adamw
    lr: float = 0.05                   # peak learning rate for this batch_size
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4         # not applied to batch-norm and bias parameters
    schedule: str = "onecycle"         # step (divide by 10), cosine, onecycle, constant, plateau
    warmup_epochs: float = 0.0         # linear warm-up (cosine, step)
    step_epochs: int = 30              # step schedule: divide lr by step_gamma every this many
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    ema: float = 0.0                   # decay per step of an exponential moving average of the
                                       #   weights (e.g. 0.999), which is then what is evaluated
                                       #   and saved; 0: off
    lookahead: int = 0                 # Lookahead (Zhang et al. 2019): every this many steps the
    lookahead_alpha: float = 0.5       #   slow weights move alpha of the way to the trained
                                       #   ones, and training goes on from them; 0: off
    lookahead_ramp: bool = False       # ramp alpha from 1 down to lookahead_alpha as (t/T)^3
                                       #   (airbench's): averaging grows strong at the end
    norm_bias_lr: float = 1.0          # learning-rate multiplier for batch-norm biases
                                       #   (airbench: 64, with the scales fixed)
    whiten_bias_epochs: int = 3        # a whitening first layer (vgg_speed): its weights come
                                       #   from the training images; its bias trains this long
    # --- execution ---
    device: str = "auto"               # auto (cuda if available), cpu, cuda, cuda:N
    precision: str = "auto"            # auto (bf16 on GPU, fp32 on CPU), fp32, bf16
    channels_last: bool = True
    conv_algorithm: str = "auto"       # 3x3 convolutions on maps of <= 8x8: auto (Winograd
                                       #   F(2x2,3x3) for bf16 CPU training steps of layers with
                                       #   >= 256 channels: VGG-16-BN 1.3x faster), winograd
                                       #   (always, any precision), direct (never)
    compile: bool = False              # torch.compile the model (measure before turning on)
    sync_bn: bool = False              # SyncBatchNorm across processes (torchrun only)
    deterministic: bool = False        # deterministic kernels (slower); for exact resumes
    seed: int = 0
    eval_batch_size: int = 1000
    tta: bool = False                  # evaluate with horizontal-flip averaging
    tta_shift: int = 0                 # also average over views translated by +-N pixels
    out: str = "runs/train"            # run directory
    resume: bool = False               # continue the run in `out` from its last checkpoint
    overwrite: bool = False            # start afresh in an `out` that already holds a run
    stop_after: int | None = None      # stop (checkpointed) after this epoch, as if interrupted
    progress: bool = True              # progress bar

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {
    "head": ("classifier", "conv", "linear"),
    "init": ("kaiming", "paper", "xavier", "dirac"),
    "freeze": ("none", "features"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("step", "cosine", "onecycle", "constant", "plateau"),
    "precision": ("auto", "fp32", "bf16"),
    "conv_algorithm": ("auto", "direct", "winograd"),
}


def _field_types() -> dict[str, tuple]:
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[name] = tuple(a for a in args if a is not type(None)), type(None) in args
    return out


def _coerce(key: str, value):
    types_, optional = _field_types()[key]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be empty")
    base = types_[0]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif base is str and isinstance(value, str):
        return value
    if isinstance(value, str) and base in (int, float):
        try:
            return base(value)
        except ValueError:
            pass
    if isinstance(value, str) and optional and value.lower() == "none":
        return None
    raise ConfigError(f"{key} must be {base.__name__}{' or none' if optional else ''}; "
                      f"got {value!r} ({type(value).__name__})")


def validate(cfg: TrainConfig) -> TrainConfig:
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices and not (value is None and _field_types()[key][1]):
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1; got {getattr(cfg, key)}")
    if cfg.scale_max is not None and (cfg.scale is None or cfg.scale_max < cfg.scale):
        raise ConfigError(f"scale_max ({cfg.scale_max}) needs scale set and at most scale_max")
    if cfg.stream and (cfg.data.lower() in ("cifar10", "cifar100", "digits")):
        raise ConfigError(f"stream reads an ImageFolder tree from disk; {cfg.data} is held in "
                          "memory instead: drop --stream, or give a folder path as data")
    if cfg.stream and not cfg.crop_size:
        raise ConfigError("stream needs crop_size (the network's input size, e.g. 224) and "
                          "scale (the training scale S, e.g. 256)")
    if cfg.tta_shift < 0:
        raise ConfigError(f"tta_shift must be 0 or more pixels; got {cfg.tta_shift}")
    if cfg.workers < 0:
        raise ConfigError(f"workers must be 0 or more; got {cfg.workers}")
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"ema is a decay per step in [0, 1), e.g. 0.999 (0: off); got {cfg.ema}")
    if cfg.lookahead < 0:
        raise ConfigError(f"lookahead is a number of steps, e.g. 5 (0: off); got {cfg.lookahead}")
    if not 0 < cfg.lookahead_alpha <= 1:
        raise ConfigError(f"lookahead_alpha must be in (0, 1], e.g. 0.5; got {cfg.lookahead_alpha}")
    if cfg.alternate_flip and not cfg.flip:
        raise ConfigError("alternate_flip needs flip true (it changes how images are flipped)")
    if cfg.alternate_flip and cfg.stream:
        raise ConfigError("alternate_flip works with in-memory data sets only; drop it with "
                          "--stream (streamed images are flipped at random)")
    if cfg.norm_bias_lr <= 0:
        raise ConfigError(f"norm_bias_lr is a multiplier of lr, e.g. 64; got {cfg.norm_bias_lr}")
    if cfg.whiten_bias_epochs < 0:
        raise ConfigError(f"whiten_bias_epochs must be 0 or more; got {cfg.whiten_bias_epochs}")
    if cfg.lookahead_ramp and not cfg.lookahead:
        raise ConfigError("lookahead_ramp needs lookahead (a number of steps, e.g. 5)")
    if cfg.lr <= 0:
        raise ConfigError(f"lr must be positive; got {cfg.lr}")
    return cfg


def merge(cfg: TrainConfig, values: dict, source: str) -> TrainConfig:
    names = [f.name for f in fields(TrainConfig)]
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}; valid keys: {', '.join(names)}")
        try:
            setattr(cfg, key, _coerce(key, value))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    flat = {}
    for key, value in data.items():  # sections ([model], [data]...) are only for reading
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def resolve(recipe: str | Path | dict | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the recipe (a TOML file, or a dict such as a run's saved config.json),
    then ``overrides`` (e.g. parsed flags)."""
    cfg = TrainConfig()
    if isinstance(recipe, dict):
        merge(cfg, recipe, "saved config")
    elif recipe:
        merge(cfg, load_recipe(recipe), str(recipe))
    if overrides:
        merge(cfg, overrides, "command line")
    return validate(cfg)


def add_flags(parser) -> None:
    """One --flag per field, each overriding the recipe; unset flags leave it alone."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        types_, _ = _field_types()[f.name]
        if types_[0] is bool:
            parser.add_argument(flag, dest=f.name, default=None, type=str, metavar="BOOL",
                                nargs="?", const="true",
                                help=f"true or false; alone means true (default {default})")
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=str,
                                metavar=types_[0].__name__.upper(),
                                help=f"default {default}" + (
                                    f"; one of {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""))


def flags_to_overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name, None) is not None}
