"""A run's metadata, typed, written and read in one place; checkpoints that survive crashes.

A run directory holds, after every epoch:

* ``last.safetensors`` / ``best.safetensors``: weights, with the :class:`RunMetadata` (model
  config, class names, preprocessing, training config, versions) in the file's metadata, so
  evaluation, prediction, export and serving need nothing else;
* ``last.json`` / ``best.json``: the same metadata, readable, plus the epoch's metrics;
* ``last.state.pt``: everything ``--resume`` needs (see :mod:`vggnet.training.state`).

Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the old one (:func:`vggnet.io.atomic_write`), so a crash at any moment leaves the previous
complete file.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import DataError, WeightsError
from .io import atomic_write, write_json
from .models import create_model, load_weights, save_weights
from .data.stream import IMAGENET_MEAN, IMAGENET_STD
from .models.normalization import InputNorm
from .models.weights import read_metadata as read_file_metadata
from .version import __version__



@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: shorter side to ``test_scale``, a centre crop
    of ``input_size``, then ``(x / 255 - mean) / std`` per channel."""
    mean: tuple[float, ...] = tuple(IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(IMAGENET_STD)
    input_size: int = 224
    test_scale: int | None = None       # None: input_size (no border is cropped)
    channels: int = 3
    resize: str = "shorter side to input_size, then centre crop"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.test_scale is None:
            object.__setattr__(self, "test_scale", int(self.input_size))

    @classmethod
    def from_dict(cls, d: dict | None) -> "Preprocessing":
        d = dict(d or {})
        known = {k: d[k] for k in ("mean", "std", "input_size", "test_scale", "channels",
                                   "resize") if k in d}
        return cls(**known)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N x C x H x W, any size) as the network sees them at prediction:
        shorter side to ``test_scale``, then a centre crop of ``input_size`` (the resize of
        :class:`vggnet.predict.Predictor`, on tensors)."""
        from .data.augment import center_crop, resize_shorter

        return center_crop(resize_shorter(images, self.test_scale), self.input_size)


def software_versions() -> dict:
    import torchvision

    return {"vggnet": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunMetadata:
    """What travels with a run's weights. ``config`` is the resolved training configuration
    (see :class:`vggnet.training.config.TrainConfig`), as a plain dict."""
    classes: list[str]
    preprocessing: Preprocessing
    model_config: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)    # source, train_images, test_images
    versions: dict = field(default_factory=software_versions)
    git_commit: str | None = None
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)  # device and the precision it trained in

    @classmethod
    def from_dict(cls, d: dict) -> "RunMetadata":
        n = int(d.get("model_config", {}).get("num_classes", 0))
        return cls(classes=list(d.get("classes") or [str(i) for i in range(n)]),
                   preprocessing=Preprocessing.from_dict(d.get("preprocessing")),
                   model_config=dict(d.get("model_config") or {}),
                   config=dict(d.get("config") or {}), data=dict(d.get("data") or {}),
                   versions=dict(d.get("versions") or {}), git_commit=d.get("git_commit"),
                   epoch=d.get("epoch"), metrics=dict(d.get("metrics") or {}),
                   compute=dict(d.get("compute") or {}))

    def to_dict(self) -> dict:
        return {"model_config": self.model_config, "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(), "data": self.data,
                "config": self.config, "versions": self.versions,
                "git_commit": self.git_commit, "epoch": self.epoch, "metrics": self.metrics,
                "compute": self.compute}

    @property
    def data_source(self) -> str | None:
        """The data set the run trained on: a built-in name, or its folder or archive, as given
        to ``vggnet train`` if that path works from here, else as resolved when it trained
        (so a run trained with a relative path evaluates from any directory)."""
        given = self.config.get("data") or self.data.get("source")
        return usable_path(given, self.data.get("source_path"))

    @property
    def data_root(self) -> str | None:
        """Where the run's built-in data set (cifar10, imagenette, ...) lived: ``--data-root``
        as given if that path works from here, else as resolved when it trained."""
        return usable_path(self.config.get("data_root"), self.data.get("root"))


def absolute_path(path) -> str | None:
    """``path`` resolved (user and symbolic links expanded), if it exists; else None."""
    if not path:
        return None
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else None


def usable_path(given, resolved):
    """``given`` (a path as a run recorded it, maybe relative to where it trained) if it
    exists from the current directory, else ``resolved`` (the absolute path recorded then) if
    that exists, else ``given`` unchanged, so that a later error names what was recorded."""
    if not given or Path(given).expanduser().exists() or not resolved or not Path(resolved).exists():
        return given
    return resolved


# --- checkpoints ----------------------------------------------------------------------------

def save_checkpoint(model, path: Path, meta: RunMetadata) -> Path:
    """Weights (.safetensors, with ``meta`` inside) and the same metadata readable (.json
    beside it), each written atomically. The model's own config is what is recorded."""
    module = getattr(model, "_orig_mod", model)  # never the torch.compile wrapper
    full = {**meta.to_dict(), "model_config": module.model_config}
    extra = {k: v for k, v in full.items() if k != "model_config"}
    path = Path(path)
    atomic_write(path, lambda p: save_weights(module, p, extra_metadata=extra))
    write_json(path.with_suffix(".json"), full)
    return path


def resolve_checkpoint(run_or_file: str | Path, which: str = "best") -> Path:
    """A run directory (its best, else last checkpoint) or a checkpoint file."""
    p = Path(run_or_file)
    if p.is_dir():
        for name in (f"{which}.safetensors", "best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise WeightsError(f"{p} holds no checkpoint (best.safetensors or last.safetensors): "
                           "is it a vggnet run directory?")
    if p.is_file():
        return p
    raise WeightsError(f"checkpoint not found: {p}")


def read_run_metadata(run_or_file: str | Path, which: str = "best") -> RunMetadata:
    """The metadata of a vggnet checkpoint, without building its model."""
    path = resolve_checkpoint(run_or_file, which)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: vggnet checkpoints are .safetensors files; to use "
                           "torchvision or timm weights, build the model with --weights")
    try:
        meta = read_file_metadata(path)
    except Exception as exc:  # safetensors raises its own types for a broken header
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    if "model_config" not in meta:
        raise WeightsError(f"{path} carries no vggnet model config")
    return RunMetadata.from_dict(meta)


def load_checkpoint(run_or_file: str | Path, which: str = "best", device="cpu"):
    """(model in eval mode, :class:`RunMetadata`) from a vggnet checkpoint alone."""
    path = resolve_checkpoint(run_or_file, which)
    meta = read_run_metadata(path)
    config = dict(meta.model_config)
    model = create_model(config.pop("name"), **config)
    load_weights(model, path, strict_head=True)
    pre = meta.preprocessing  # features on this run's model see its own data's statistics
    model.input_norm = InputNorm(tuple(pre.mean), tuple(pre.std))
    return model.to(device).eval(), meta


# --- the run's data -------------------------------------------------------------------------

def open_run_data(meta: RunMetadata, split: str = "test", *, n: int | None = None,
                  data: str | None = None, data_root=None, image_size: int | None = None,
                  seed: int = 1, as_input: bool = False):
    """The images a run was trained (``split="train"``) or tested on, as an in-memory
    :class:`~vggnet.data.ImageTensors` (``n`` of them, class-stratified; all with ``None``).
    ``data`` (and ``image_size``) read another data set with the same classes instead.
    Streamed runs (ImageNet-sized folders) give the images centre-cropped at the run's
    test scale, decoded one by one. ``as_input``: every image as the network sees it at
    prediction (:meth:`Preprocessing.view`), the form that exports are checked and
    calibrated on."""
    from .data import load_splits

    cfg = meta.config
    source = data or meta.data_source
    if not source:
        raise DataError("no data set recorded in the checkpoint: pass --data")
    if cfg.get("stream") and not data:
        return _streamed_images(meta, split, n, seed)  # already as the network sees them
    root = data_root or meta.data_root
    size = image_size if data else cfg.get("image_size")
    train, test = load_splits(source, root=root, image_size=size,
                              val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("seed", 0))
    out = train if split == "train" else test
    if meta.classes and out.classes != meta.classes:
        raise DataError(f"the data's classes {out.classes[:5]}... differ from the checkpoint's "
                        f"{meta.classes[:5]}...: use data with the same class folders")
    out = out.subset(n, seed=seed)
    if as_input:
        out = type(out)(meta.preprocessing.view(out.images), out.labels, out.classes)
    return out


def _streamed_images(meta: RunMetadata, split: str, n: int | None, seed: int):
    from .data import ImageTensors
    from .data.stream import FolderImages, stream_splits

    pre = meta.preprocessing
    folder = stream_splits(meta.data_source)[0 if split == "train" else 1]
    images = FolderImages(folder, train=False, crop=pre.input_size, test_scale=pre.test_scale)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    order = (order if n is None else order[: 4 * n]).tolist()
    items = [it for it in (images[i] for i in order) if it is not None][:n]
    return ImageTensors(torch.stack([x for x, _ in items]),
                        torch.tensor([y for _, y in items]), images.classes)
