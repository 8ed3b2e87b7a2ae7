"""Training from a run: what a trained run lends to a new run started from its weights.

``vggnet train --data FOLDER --weights RUN`` should need nothing else: the run knows its
architecture (model, width, head) and how its images were prepared (the size they were
decoded at, the training scales and crop, the mean and std). Each of those the user did not
set (in a recipe or a flag) is taken from the run, and :func:`describe` says what was taken
from where in the first lines of the log. With ``--init-from RUN`` (a shallower net that
initialises a deeper one, the paper's way) the model is the user's by definition; the width,
head and preprocessing are still the run's.

Weights given without a recipe start from the packaged ``finetune`` recipe (a short cosine
schedule at a low learning rate, the backbone at a tenth of it), rather than from the
defaults of a training from scratch.
"""

from __future__ import annotations

from pathlib import Path

FINETUNE = "finetune"
# TrainConfig field <- the run's model_config key
_ARCH = {"model": "name", "width": "width", "head": "head", "fc_dim": "fc_dim"}
# TrainConfig fields that say how the run's images were prepared
_PREPROCESSING = ("image_size", "scale", "scale_max", "crop_size")


def weights_run(value: str | None):
    """The :class:`vggnet.run.RunMetadata` of a vggnet run directory or checkpoint, or None
    for anything else (torchvision/timm/Keras files, ``imagenet``, nothing)."""
    from ..errors import WeightsError
    from ..run import read_run_metadata

    if not value or not Path(value).exists():
        return None
    path = Path(value)
    if path.is_file() and path.suffix != ".safetensors":
        return None
    try:
        return read_run_metadata(path)
    except WeightsError:
        return None  # a .safetensors of weights alone: nothing to inherit


def inherited_values(cfg, explicit: set[str]) -> dict[str, tuple[object, str]]:
    """``{field: (value, source)}`` that the run given as ``weights`` (else ``init_from``)
    lends to ``cfg``, for the fields not in ``explicit`` (those a recipe or a flag set)."""
    source, meta = "weights", weights_run(cfg.weights)  # each checkpoint's header read once
    if meta is None:
        source, meta = "init_from", weights_run(cfg.init_from)
    if meta is None:
        lent = imagenet_values(cfg, explicit)
        lent.update(data_values(cfg, explicit | set(lent)))
        return lent
    where = getattr(cfg, source)
    lent: dict[str, object] = {}
    for key, model_key in _ARCH.items():
        if key == "model" and source == "init_from":
            continue  # a shallower net initialises another model
        if model_key in meta.model_config:
            lent[key] = meta.model_config[model_key]
    run_cfg, pre = meta.config, meta.preprocessing
    for key in _PREPROCESSING:
        if run_cfg.get(key) is not None:
            lent[key] = run_cfg[key]
    lent.setdefault("image_size", pre.test_scale)  # the data set's own size, as decoded
    lent["normalize"] = format_normalize(pre.mean, pre.std)
    return {k: (v, str(where)) for k, v in lent.items() if k not in explicit}


def imagenet_values(cfg, explicit: set[str]) -> dict[str, tuple[object, str]]:
    """What weights trained on ImageNet lend (``imagenet``, ``vgg16_bn.tv_in1k``, a torchvision
    or timm ``.pth``, a Keras ``.h5``): the architecture they fit, their fc6/fc7 kept (the
    last layer replaced for the new classes, as PyTorch's fine-tuning tutorial does), their
    inputs' mean and std (ImageNet's; Keras': its 'caffe' inputs) and, for a folder of
    images, their sizes (shorter side 256, 224 px crops; built-in sets such as cifar10 keep
    their own). Nothing for other sources, or no weights."""
    from ..models.hub import (DEFAULT_IMAGENET_MODEL, IMAGENET_CROP, IMAGENET_SCALE,
                              is_published, published_model)
    from ..formats.keras import is_keras_file

    weights = cfg.weights
    if not weights:
        return {}
    lent: dict[str, object] = {}
    if is_published(weights):
        what = f"the {weights} weights"
        lent["model"] = published_model(weights) or DEFAULT_IMAGENET_MODEL
        lent["head"], lent["normalize"] = "classifier", "imagenet"
    elif Path(weights).is_file():
        what = str(weights)
        lent.update(_file_architecture(weights))
        lent["normalize"] = "caffe" if is_keras_file(weights) else "imagenet"
        if "fc_dim" not in lent:  # a backbone alone (timm features, Keras without the top)
            lent.pop("head", None)
    else:
        return {}
    if Path(cfg.data).expanduser().exists():  # photos; built-in sets keep their own size
        lent.update(image_size=IMAGENET_SCALE, scale=IMAGENET_SCALE, crop_size=IMAGENET_CROP,
                    crop_padding=0, eval_batch_size=64)  # 1000 images of 224 px: ~20 GB
    if "model" in explicit:  # a named model takes the weights as they are
        lent.pop("model")
    return {k: (v, what) for k, v in lent.items() if k not in explicit}


def _file_architecture(path) -> dict[str, object]:
    """model, width, head and fc_dim of the network a weights file fits, as far as its
    tensors tell; {} when they fit no registered VGG (loading then says why)."""
    from ..errors import WeightsError
    from ..models.factory import infer_architecture
    from ..models.weights import read_state_dict

    try:
        sd = read_state_dict(path)
    except WeightsError:
        return {}  # loading the weights will name the problem
    arch = infer_architecture(sd)
    if arch is None:
        return {}
    name, _, rest = arch.partition(" (width ")
    out: dict[str, object] = {"model": name, "head": "classifier"}
    if rest:
        out["width"] = float(rest.rstrip(")"))
    for key in ("classifier.0.weight", "pre_logits.fc1.weight", "head.fc6.weight"):
        if key in sd:
            out["fc_dim"] = int(sd[key].shape[0])
    return out


# the largest image size chosen for a folder of photos of mixed sizes (ImageNet's input size)
MAX_IMPLIED_SIZE = 224


def data_values(cfg, explicit: set[str]) -> dict[str, tuple[object, str]]:
    """The image size a folder of images of different sizes is decoded at when nothing else
    sets one: the largest training scale (or the crop) when those are set, else the median
    shorter side of the images, rounded down to a multiple of 32 and kept within
    [32, MAX_IMPLIED_SIZE]. Nothing when the images share one size or the data is built in."""
    from ..data.survey import survey_sizes

    if cfg.image_size is not None or "image_size" in explicit:
        return {}
    sizes = survey_sizes(cfg.data)
    if not sizes or len(set(sizes)) == 1:
        return {}
    shorter = sorted(min(w, h) for w, h in sizes)
    if cfg.scale or cfg.crop_size:
        size, why = cfg.scale_max or cfg.scale or cfg.crop_size, "the largest training scale"
    else:
        median = shorter[len(shorter) // 2]
        size = max(32, min(MAX_IMPLIED_SIZE, median // 32 * 32))
        why = f"median shorter side {median} px, as a multiple of 32 up to {MAX_IMPLIED_SIZE}"
    return {"image_size": (size, f"the data ({len(sizes)} images looked at, shorter sides "
                                 f"{shorter[0]}-{shorter[-1]} px: {why}; --image-size N "
                                 "to choose)")}


def format_normalize(mean, std) -> str:
    """``"0.4914,0.4822,0.4465/0.247,0.2435,0.2616"``: the form of TrainConfig.normalize."""
    return ",".join(f"{m:.4g}" for m in mean) + "/" + ",".join(f"{s:.4g}" for s in std)


def parse_normalize(text: str | None):
    """(mean, std) from TrainConfig.normalize, or None for the training set's own."""
    from ..data.stream import IMAGENET_MEAN, IMAGENET_STD
    from ..errors import ConfigError
    from ..models.normalization import CAFFE, rgb_equivalent

    if text is None:
        return None
    if text.lower() in ("imagenet", "torchvision"):
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    if text.lower() == "caffe":  # BGR in [0, 255] minus the ImageNet mean, as RGB in [0, 1]
        caffe = rgb_equivalent(CAFFE)
        return caffe.mean, caffe.std
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        mean = std = ()
    if not mean or len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(f"normalize must be imagenet, caffe or 'mean/std' per channel in [0, 1] "
                          f"units, e.g. 0.485,0.456,0.406/0.229,0.224,0.225; got {text!r}")
    return mean, std


def describe(cfg) -> list[str]:
    """The log lines that say which settings came from a run or the finetune recipe."""
    lines = []
    lent = getattr(cfg, "inherited", {})
    by_source: dict[str, list[str]] = {}
    for key, (value, source) in lent.items():
        by_source.setdefault(source, []).append(f"{key} {value}")
    for source, items in by_source.items():
        lines.append(f"from {source}: {', '.join(items)} (a flag overrides any of them)")
    if getattr(cfg, "recipe_default", None) == FINETUNE:
        lines.append(f"no --config: fine-tuning defaults from the packaged recipe {FINETUNE} "
                     f"(epochs {cfg.epochs}, lr {cfg.lr:g} {cfg.schedule}, backbone lr x"
                     f"{cfg.backbone_lr:g}, batch {cfg.batch_size})")
    return lines
