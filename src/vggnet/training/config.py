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

from ..device import PRECISIONS
from ..errors import ConfigError, DataError
from ..data.datasets import BUILTIN as BUILTIN_DATA
from ..models.registry import get_builder
from .schedule import SCHEDULES
from .transfer import FINETUNE, inherited_values, parse_normalize


def opt(default, help: str):
    """A config field with its documentation, which is also its command-line help."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a training run. Each field's help text is its `--flag`'s help; units
    are in the text (lr is per batch of batch_size images, schedules count epochs)."""
    # --- model ---
    model: str = opt("vgg11_bn", "a name from `vggnet models`")
    width: float = opt(1.0, "channel multiplier; 1.0 is the paper's")
    head: str = opt("linear", "classifier (FC-4096 x2), conv (fully convolutional), linear")
    dropout: float | None = opt(None, "dropout ratio of the head; none: 0.5 for the FC heads (the paper's), 0 for the linear head")
    fc_dim: int = opt(4096, "width of fc6/fc7")
    init: str | None = opt(None, "kaiming, paper (N(0, 1e-2)), xavier, dirac; none: the model's own (kaiming; dirac for vgg_speed)")
    weights: str | None = opt(None, "initial weights: a vggnet run, a torchvision or timm .pth, a Keras .h5, imagenet (torchvision's for the model; VGG-16-BN when none is named) or timm's name such as vgg16_bn.tv_in1k. They lend the model, head and preprocessing they fit unless a flag sets them; the log says what came from where")
    init_from: str | None = opt(None, "a trained shallower net (the paper's init from net A)")
    freeze: str = opt("none", "none, or features (train the head only)")
    unfreeze_after: int | None = opt(None, "with freeze features: train the head alone for this many epochs, then the backbone too (at lr x backbone_lr)")
    backbone_lr: float = opt(1.0, "learning-rate multiplier of the convolutional layers (discriminative rates for fine-tuning, e.g. 0.1)")
    # --- data ---
    data: str = opt("cifar10", "cifar10, cifar100, digits, or an ImageFolder path / tar")
    data_root: str | None = opt(None, "where cifar10/cifar100 live (default ~/.cache/vggnet/data)")
    download: bool = opt(False, "fetch the official release if absent (checksum verified)")
    image_size: int | None = opt(None, "decode images at N x N (shorter side to N, then the centre); unset: the data set's own size, or for a folder of mixed sizes one chosen from the images (the log says which)")
    normalize: str | None = opt(None, "input mean and std: none (the training set's own), imagenet, caffe (Keras' VGG weights, which lend it), or 'R,G,B/R,G,B' in [0, 1] units; a run given as weights lends its own")
    val_fraction: float = opt(0.1, "held out when the data has no test/ or val/ split")
    train_subset: int | None = opt(None, "use only this many training images (class-stratified)")
    test_subset: int | None = opt(None, "evaluate on this many test images")
    crop_padding: int = opt(4, "random crop after reflect-padding by this many pixels")
    flip: bool = opt(True, "random horizontal flip")
    alternate_flip: bool = opt(False, "flip each image in every other epoch (random in the first) instead of tossing a coin every epoch")
    cutout: int = opt(0, "side of the cutout square in pixels (0: off)")
    mixup: float = opt(0.0, "mixup: blend each batch with a permutation of itself, weight ~ Beta(alpha, alpha); this is alpha, e.g. 0.2 (0: off)")
    cutmix: float = opt(0.0, "CutMix: paste a box of a permuted partner, area ~ Beta(alpha, alpha); this is alpha, e.g. 1.0 (0: off); with mixup, one of the two per batch")
    scale: int | None = opt(None, "the paper's training scale S in pixels: shorter side to S, then a random crop of crop_size")
    scale_max: int | None = opt(None, "with scale: S jittered per image in [scale, scale_max] (the paper's multi-scale training)")
    crop_size: int | None = opt(None, "network input size with `scale` (default: image size)")
    crop_start: int | None = opt(None, "progressive resizing: the training crop grows from this size in the first epoch to crop_size (the scales S with it); needs scale")
    crop_ramp: float = opt(0.75, "with crop_start: the fraction of the epochs over which the crop grows; the rest train at crop_size")
    lighting: float = opt(0.0, "AlexNet's PCA colour shift, std of alpha (paper: 0.1)")
    stream: bool = opt(False, "decode a folder's images every epoch with worker processes (ImageNet-sized sets that do not fit in RAM)")
    workers: int = opt(4, "decoding processes when streaming")
    # --- optimisation ---
    epochs: int = opt(30, "passes over the training set")
    batch_size: int = opt(128, "images per optimizer step, over all processes (the global batch)")
    optimizer: str = opt("sgd", "sgd (Nesterov momentum) or adamw")
    lr: float = opt(0.05, "peak learning rate for this batch_size")
    momentum: float = opt(0.9, "SGD momentum")
    nesterov: bool = opt(True, "Nesterov momentum (SGD)")
    weight_decay: float = opt(5e-4, "not applied to batch-norm and bias parameters")
    schedule: str = opt("onecycle", "step (divide by 10), cosine, onecycle, constant, plateau")
    warmup_epochs: float = opt(0.0, "epochs of linear warm-up (cosine, step, constant, plateau; onecycle: the rising part)")
    step_epochs: int = opt(30, "step schedule: divide lr by 1/step_gamma every this many epochs")
    plateau_patience: int = opt(2, "plateau schedule: epochs without a better test top-1 that are borne before lr is multiplied by step_gamma")
    step_gamma: float = opt(0.1, "factor of each lr decrease (step and plateau schedules)")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy loss, in [0, 1)")
    ema: float = opt(0.0, "decay per step of an exponential moving average of the weights (e.g. 0.999), which is then what is evaluated and saved; 0: off")
    lookahead: int = opt(0, "Lookahead (Zhang et al. 2019): every this many steps the slow weights move lookahead_alpha of the way to the trained ones, and training goes on from them; 0: off")
    lookahead_alpha: float = opt(0.5, "Lookahead's step towards the trained weights, in (0, 1]")
    lookahead_ramp: bool = opt(False, "ramp alpha from 1 down to lookahead_alpha as (t/T)^3 (airbench's): averaging grows strong at the end")
    norm_bias_lr: float = opt(1.0, "learning-rate multiplier for batch-norm biases (airbench: 64, with the scales fixed)")
    whiten_bias_epochs: int = opt(3, "a whitening first layer (vgg_speed): its weights come from the training images; its bias trains this long")
    # --- execution ---
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N")
    precision: str = opt("auto", "auto (bf16 on a GPU and on CPUs with AVX512-BF16 or AMX, fp32 elsewhere), fp32, bf16")
    channels_last: bool = opt(True, "channels-last memory format (faster convolutions on CPUs and GPUs)")
    conv_algorithm: str = opt("auto", "3x3 convolutions on maps of <= 8x8: auto (Winograd F(2x2,3x3) for bf16 CPU training steps of layers with >= 256 channels, where it measured faster: benchmarks/RESULTS.md), winograd (always, any precision), direct (never)")
    compile: bool = opt(False, "torch.compile the model (measure before turning on)")
    sync_bn: bool = opt(False, "SyncBatchNorm across processes (torchrun only)")
    deterministic: bool = opt(False, "deterministic kernels (slower); for exact resumes")
    seed: int = opt(0, "seed of the initialisation, the data order and the augmentation")
    eval_batch_size: int = opt(1000, "images per batch when evaluating")
    tta: bool = opt(False, "evaluate with horizontal-flip averaging")
    tta_shift: int = opt(0, "also average over views translated by +-N pixels")
    out: str = opt("runs/train", "run directory")
    resume: bool = opt(False, "continue the run in `out` from its last checkpoint")
    overwrite: bool = opt(False, "start afresh in an `out` that already holds a run")
    stop_after: int | None = opt(None, "stop (checkpointed) after this epoch, as if interrupted")
    progress: bool = opt(True, "progress bar")

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {
    "head": ("classifier", "conv", "linear"),
    "init": ("kaiming", "paper", "xavier", "dirac"),
    "freeze": ("none", "features"),
    "optimizer": ("sgd", "adamw"),
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
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
    if isinstance(value, str) and optional and value.lower() == "none":
        return None  # --weights none clears a recipe's weights, as none does everywhere
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
    raise ConfigError(f"{key} must be {base.__name__}{' or none' if optional else ''}; "
                      f"got {value!r} ({type(value).__name__})")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check the whole configuration (choices, ranges, the model and its options, paths)
    before anything is read or built, so the first error a user meets is the real one."""
    _check_values(cfg)
    _check_model(cfg)
    _check_paths(cfg)
    return cfg


def _check_model(cfg: TrainConfig) -> None:
    """The model name and its options, by building it on the meta device (no memory)."""
    import torch

    builder = get_builder(cfg.model)  # UnknownModelError names the valid ones
    options = {"init": cfg.init} if cfg.init else {}
    with torch.device("meta"):
        builder(num_classes=2, width=cfg.width, head=cfg.head, dropout=cfg.dropout,
                fc_dim=cfg.fc_dim, **options)


def _check_paths(cfg: TrainConfig) -> None:
    from ..errors import WeightsError
    from ..models.hub import URLS, is_published, published_model

    if cfg.data.lower() not in BUILTIN_DATA and not Path(cfg.data).expanduser().exists():
        raise DataError(f"data set {cfg.data!r} not found: give one of "
                        f"{', '.join(BUILTIN_DATA)}, a folder in the ImageFolder layout, or a "
                        ".tar/.tar.gz of one")
    if is_published(cfg.weights):
        try:
            name = published_model(cfg.weights, cfg.model)
        except WeightsError as exc:
            raise ConfigError(str(exc)) from None
        if name not in URLS:
            raise ConfigError(f"weights imagenet: no published ImageNet weights for {name}; "
                              f"the models that have them: {', '.join(URLS)}")
    elif cfg.weights and not Path(cfg.weights).exists():
        raise ConfigError(f"weights: {cfg.weights} not found (a run directory, a .safetensors, "
                          ".pth or Keras .h5 file, imagenet, or a name such as "
                          "vgg16_bn.tv_in1k)")
    if cfg.init_from and not Path(cfg.init_from).exists():
        raise ConfigError(f"init_from: {cfg.init_from} not found (train the shallower net "
                          "first, e.g. configs/imagenet/vgg11_S256.toml)")


def check_run_dir(cfg: TrainConfig) -> None:
    """A new run never overwrites an old one; a resumed run must have a state to resume."""
    out = Path(cfg.out)
    existing = [p.name for p in (out / "last.safetensors", out / "last.state.pt") if p.is_file()]
    if existing and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"{out} already holds a run ({', '.join(existing)}); continue it with "
                          "--resume, start afresh with --overwrite true, or choose another --out")
    if cfg.resume and not (out / "last.state.pt").is_file():
        raise ConfigError(f"--resume: {out / 'last.state.pt'} not found; is {out} a run that "
                          "finished at least one epoch (or was interrupted)?")


def _check_progressive(cfg: TrainConfig) -> None:
    if not (cfg.scale and cfg.crop_size):
        raise ConfigError("crop_start (progressive resizing) needs scale and crop_size: the "
                          "crop grows from crop_start to crop_size, S with it")
    if not 32 <= cfg.crop_start <= cfg.crop_size:  # VGG's five poolings need 32 px
        raise ConfigError(f"crop_start must be between 32 and crop_size ({cfg.crop_size}) "
                          f"pixels; got {cfg.crop_start}")
    if not 0 < cfg.crop_ramp <= 1:
        raise ConfigError(f"crop_ramp is a fraction of the epochs in (0, 1]; got {cfg.crop_ramp}")
    if cfg.stream:
        raise ConfigError("crop_start (progressive resizing) works with in-memory data sets "
                          "only; drop it with --stream")


def _check_values(cfg: TrainConfig) -> None:
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices and not (value is None and _field_types()[key][1]):
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1; got {getattr(cfg, key)}")
    if cfg.scale_max is not None and (cfg.scale is None or cfg.scale_max < cfg.scale):
        raise ConfigError(f"scale_max ({cfg.scale_max}) needs scale set and at most scale_max")
    if cfg.crop_start is not None:
        _check_progressive(cfg)
    if cfg.stream and (cfg.data.lower() in ("cifar10", "cifar100", "digits")):
        raise ConfigError(f"stream reads an ImageFolder tree from disk; {cfg.data} is held in "
                          "memory instead: drop --stream, or give a folder path as data")
    if cfg.stream and not cfg.crop_size:
        raise ConfigError("stream needs crop_size (the network's input size, e.g. 224) and "
                          "scale (the training scale S, e.g. 256)")
    if cfg.mixup < 0 or cfg.cutmix < 0:
        raise ConfigError(f"mixup and cutmix are Beta alphas, 0 (off) or more, e.g. 0.2 and "
                          f"1.0; got {cfg.mixup} and {cfg.cutmix}")
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
    if cfg.unfreeze_after is not None and (cfg.freeze != "features"
                                           or not 1 <= cfg.unfreeze_after < cfg.epochs):
        raise ConfigError(f"unfreeze_after needs freeze features and an epoch in [1, epochs - "
                          f"1] (epochs is {cfg.epochs}); got {cfg.unfreeze_after}")
    if cfg.backbone_lr <= 0:
        raise ConfigError(f"backbone_lr is a multiplier of lr, e.g. 0.1; got {cfg.backbone_lr}")
    parse_normalize(cfg.normalize)  # a clear error now rather than after the data is read
    if cfg.plateau_patience < 0:
        raise ConfigError(f"plateau_patience must be 0 or more epochs; got {cfg.plateau_patience}")


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


RECIPES = Path(__file__).resolve().parent.parent / "configs"


def list_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package, by name (``cifar10_quick``,
    ``imagenet/vgg16_S256``, ...)."""
    return {p.relative_to(RECIPES).with_suffix("").as_posix(): p
            for p in sorted(RECIPES.rglob("*.toml"))}


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: a path that exists, else a packaged recipe by name (with or without
    ``.toml`` and a leading ``configs/``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.as_posix().removesuffix(".toml").removeprefix("configs/")
    packaged = list_recipes()
    if name in packaged:
        return packaged[name]
    close = difflib.get_close_matches(name, list(packaged), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"recipe not found: {name_or_path} is no file and no packaged recipe.{hint} "
                      f"Packaged: {', '.join(packaged)} (`vggnet recipes` lists them)")


def load_recipe(path: str | Path) -> dict:
    path = find_recipe(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # found by fuzzing: tomllib decodes before it parses
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 text (byte {exc.start})") \
            from None
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
    explicit: set[str] = set()
    default_recipe = None
    if recipe is None and _gives_weights(overrides or {}):
        recipe = default_recipe = FINETUNE  # not a training from scratch
    if isinstance(recipe, dict):
        merge(cfg, recipe, "saved config")
        explicit |= set(recipe)
    elif recipe:
        values = load_recipe(recipe)
        merge(cfg, values, str(recipe))
        explicit |= set(values)
    if overrides:
        merge(cfg, overrides, "command line")
        explicit |= set(overrides)
    lent = inherited_values(cfg, {k.replace("-", "_") for k in explicit})
    for key, (value, source) in lent.items():
        try:
            setattr(cfg, key, _coerce(key, value))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    cfg.inherited, cfg.recipe_default = lent, default_recipe  # for the log, not saved
    return validate(cfg)


def _gives_weights(overrides: dict) -> bool:
    value = overrides.get("weights")
    return value is not None and str(value).lower() != "none"


def add_flags(parser) -> None:
    """One --flag per field, each overriding the recipe; unset flags leave it alone. The help
    text is the field's own documentation (one source)."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        types_, _ = _field_types()[f.name]
        choices = f"; one of {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        # "(default X)" unless the help already says what an unset value means
        shown = "" if default is None else f" (default {default})"
        text = f"{f.metadata['help']}{choices}{shown}".replace("%", "%%")
        if types_[0] is bool:
            parser.add_argument(flag, dest=f.name, default=None, type=str, metavar="BOOL",
                                nargs="?", const="true", help=f"{text}; true or false, alone "
                                "means true")
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=str,
                                metavar=types_[0].__name__.upper(), help=text)


def flags_to_overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name, None) is not None}
