"""Data sets as decoded uint8 tensors held in memory.

Small images are decoded once (JPEG/PNG -> uint8 N x C x H x W) and cached on disk, so an
epoch never decodes an image again. Supported sources:

* ``cifar10`` / ``cifar100``: the official release through torchvision (downloaded with its
  checksum verified when ``download=True``), or a local copy: the official python batches, an
  ImageFolder tree with ``train/`` and ``test/``, or a ``.tar``/``.tar.gz`` of such a tree;
* any ImageFolder tree (``train/`` + ``val/`` or ``test/``, or one folder of class folders
  split by a seeded fraction), with images of any size, resized to ``image_size``;
* ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images), upscaled to
  32x32: a real data set that needs no download.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, ImageReadError
from ..io import IMAGE_EXTENSIONS, decode_image, is_image_name
from .cache import cache_dir, cache_key, cached_splits, source_fingerprint


BUILTIN = ("cifar10", "cifar100", "imagenette", "digits")


@dataclass
class ImageTensors:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None, seed: int = 0) -> "ImageTensors":
        """A seeded, class-stratified subset of ``n`` images (all of them if n is None)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        # stratify: take round-robin over classes in the shuffled order
        by_class = [perm[self.labels[perm] == c] for c in range(len(self.classes))]
        per = -(-n // len(self.classes))
        idx = torch.cat([b[:per] for b in by_class])[:n]
        idx = idx[torch.randperm(len(idx), generator=g)]
        return ImageTensors(self.images[idx], self.labels[idx], self.classes)

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels, in [0, 1]."""
        x = self.images.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3))
        return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]


def default_data_root() -> Path:
    return Path(os.environ.get("VGGNET_DATA", cache_dir() / "data"))


# --- decoding -----------------------------------------------------------------------------

def _stack(arrays: list[np.ndarray], labels: list[int], classes: list[str]) -> ImageTensors:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}...: pass image_size "
                        "(--image-size N) to resize them to N x N (`vggnet train` chooses one "
                        "itself when neither the flag nor a recipe sets it)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(labels, dtype=torch.long), classes)


def _decode_all(items, classes, image_size, what) -> ImageTensors:
    """items: iterable of (bytes-or-path, label, name). Unreadable files are skipped with a
    warning naming them (one bad file must not stop a whole run)."""
    from tqdm import tqdm

    arrays, labels, bad = [], [], []
    for src, label, name in tqdm(items, desc=f"decoding {what}", unit="img", leave=False,
                                 disable=None, mininterval=1.0):
        try:
            arrays.append(decode_image(src, image_size, name=name))
            labels.append(label)
        except ImageReadError as exc:  # one bad file must not stop a whole run
            bad.append(str(exc))
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {what}: {', '.join(bad[:5])}"
                      + (" ..." if len(bad) > 5 else ""), stacklevel=2)
    if not arrays:
        raise DataError(f"no readable images in {what}")
    return _stack(arrays, labels, classes)


# --- ImageFolder trees (directories and tar archives) -------------------------------------

def folder_items(root: Path):
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders: expected {root}/<class>/<image> "
                        "(the ImageFolder layout)")
    classes = [d.name for d in class_dirs]
    items = []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image_name(p.name))
        if not files:
            raise DataError(f"class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "remove it or add images")
        items += [(p, label, str(p)) for p in files]
    return items, classes


def _tar_split(tar_path: Path, image_size: int | None) -> dict[str, ImageTensors]:
    """Every split (top-level folder) of a tar of ImageFolder trees, in one pass."""
    per_split: dict[str, list] = {}
    with tarfile.open(tar_path) as tf:
        for member in tf:
            parts = Path(member.name).parts  # "./train/..." has no "." part: pathlib drops it
            if not member.isfile() or len(parts) < 3 or not is_image_name(parts[-1]):
                continue
            data = tf.extractfile(member).read()
            per_split.setdefault(parts[-3], []).append((data, parts[-2], member.name))
    if not per_split:
        raise DataError(f"{tar_path} holds no images in the layout <split>/<class>/<image>")
    out = {}
    for split, items in per_split.items():
        classes = sorted({c for _, c, _ in items})
        index = {c: i for i, c in enumerate(classes)}
        out[split] = _decode_all([(d, index[c], n) for d, c, n in items], classes, image_size,
                                 f"{tar_path.name}:{split}")
    return out


# --- public entry point -------------------------------------------------------------------

TEST_SPLITS = ("test", "val", "validation")


def load_splits(source: str, *, root: str | Path | None = None, image_size: int | None = None,
                download: bool = False, val_fraction: float = 0.1, seed: int = 0,
                use_cache: bool = True) -> tuple[ImageTensors, ImageTensors]:
    """(train, test) for a built-in name or a path (folder or tar archive).

    ``image_size`` resizes every image (shorter side, then centre crop) and is required for
    folders whose images differ in size.
    """
    name = str(source).lower()
    if name == "digits":
        return _digits(seed)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, Path(root) if root else default_data_root(), download, image_size,
                      use_cache)
    if name == "imagenette":
        path = find_imagenette(Path(root) if root else default_data_root(), download)
        return _from_path(path, image_size, val_fraction, seed, use_cache)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data set {source!r} not found: give one of {', '.join(BUILTIN)}, "
                        "a folder in the ImageFolder layout, or a .tar/.tar.gz of one")
    return _from_path(path, image_size, val_fraction, seed, use_cache)


def split_root(path: Path) -> Path:
    """The folder that holds train/ (and val/ or test/): ``path`` itself, or its only
    subfolder when the archive was unpacked into one top folder (imagenette2-320/train/...)."""
    if path.is_dir() and not (path / "train").is_dir():
        subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) == 1 and (subdirs[0] / "train").is_dir():
            return subdirs[0]
    return path


def _from_path(path: Path, image_size, val_fraction, seed, use_cache):
    path = split_root(path)
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DataError(f"{path} is neither a folder nor a tar archive of images")
        build = lambda: _tar_split(path, image_size)  # noqa: E731
        key = cache_key("tar", source_fingerprint(path), image_size)
        splits = cached_splits(key, build, ImageTensors) if use_cache else build()
        return _pick_splits(splits, path, val_fraction, seed)
    subdirs = {d.name for d in path.iterdir() if d.is_dir()}
    tests = tuple(s for s in TEST_SPLITS if s in subdirs)[:1]
    # train/ with a test split beside it, or alone and holding class folders (not images: a
    # class of trains among buses and cars is a class), the held-out images then drawn by
    # the fraction
    if "train" in subdirs and (tests or not any(
            p.is_file() and is_image_name(p.name) for p in (path / "train").iterdir())):
        splits = ("train",) + tests

        def build():
            out = {}
            for split in splits:
                items, classes = folder_items(path / split)
                out[split] = _decode_all(items, classes, image_size, f"{path / split}")
            return out
    else:
        def build():
            items, classes = folder_items(path)
            return {"all": _decode_all(items, classes, image_size, str(path))}
    key = cache_key("dir", str(path.resolve()), _listing(path), image_size)
    splits = cached_splits(key, build, ImageTensors) if use_cache else build()
    return _pick_splits(splits, path, val_fraction, seed)


def _listing(path: Path) -> str:
    """A digest of every file under ``path``: its place (so its class), size and time. A
    file moved to another class folder, added, removed or rewritten changes it; reading
    the folder again then decodes it again instead of serving stale labels or pixels."""
    digest = hashlib.sha256()
    for p in sorted(p for p in path.rglob("*") if p.is_file()):
        st = p.stat()
        digest.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()


def _pick_splits(splits, path, val_fraction, seed):
    if "train" in splits:
        test = next((splits[s] for s in TEST_SPLITS if s in splits), None)
        if test is None:
            return _warn_small_classes(split_fraction(splits["train"], val_fraction, seed), path)
        train = splits["train"]
        if test.classes != train.classes:
            missing = [c for c in train.classes if c not in test.classes]
            extra = [c for c in test.classes if c not in train.classes]
            raise DataError(
                f"{path}: the class folders of train/ and the test split differ"
                + (f"; the test split has no {', '.join(missing[:5])}" if missing else "")
                + (f"; train/ has no {', '.join(extra[:5])}" if extra else "")
                + ": give both splits the same class folders (an empty folder is not enough: "
                  "a class needs at least one image in each)")
        return _warn_small_classes((train, test), path)
    if "all" in splits:
        return _warn_small_classes(split_fraction(splits["all"], val_fraction, seed), path)
    raise DataError(f"{path}: expected train/ and test/ (or val/) folders, or class folders; "
                    f"found {sorted(splits)}")


def _warn_small_classes(pair, path):
    """A class with fewer than two training images cannot be learned in any useful sense;
    training goes on, but the user hears which classes they are."""
    train = pair[0]
    counts = torch.bincount(train.labels, minlength=len(train.classes)).tolist()
    small = [f"{c} ({n})" for c, n in zip(train.classes, counts) if n < 2]
    if small:
        warnings.warn(f"{path}: class(es) with fewer than 2 training images: "
                      f"{', '.join(small[:5])}{' ...' if len(small) > 5 else ''}; the model "
                      "cannot learn them from so few; add images or remove the folder",
                      stacklevel=3)
    return pair


def split_fraction(data: ImageTensors, fraction: float, seed: int):
    """Seeded split into (train, held-out), ``fraction`` of each class held out."""
    if not 0 < fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1; got {fraction}")
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(len(data.classes)):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[: max(1, int(round(len(idx) * fraction)))] if len(idx) > 1 else idx[:0])
    held_idx = torch.cat(held)
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[held_idx] = False
    train_idx = torch.nonzero(mask).flatten()
    pick = lambda i: ImageTensors(data.images[i], data.labels[i], data.classes)  # noqa: E731
    return pick(train_idx), pick(held_idx.sort().values)


def _cifar(name, root: Path, download, image_size, use_cache):
    # A local ImageFolder copy (folder or tar) takes precedence: it needs no download.
    for candidate in (root / name, root / f"{name}-jpeg", root / f"{name}-jpeg.tar.gz", root):
        if candidate.is_file() and tarfile.is_tarfile(candidate):
            return _from_path(candidate, image_size, 0.1, 0, use_cache)
        if candidate.is_dir() and (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return _from_path(candidate, image_size, 0.1, 0, use_cache)
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        batches = cls.base_folder
        raise DataError(
            f"{name} not found under {root}: looked for the official python batches "
            f"({root / batches}, checksums verified) and for an image-folder copy with train/ "
            f"and test/ ({root / name}, {root / (name + '-jpeg')} or "
            f"{root / (name + '-jpeg.tar.gz')}). Pass --download to fetch the official release, "
            "or point --data-root (or the VGGNET_DATA variable) at the folder that holds a copy"
        ) from None

    def convert(ds):
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out = ImageTensors(images, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes))
        if image_size and image_size != images.shape[-1]:
            out.images = torch.nn.functional.interpolate(
                images.float(), size=(image_size, image_size), mode="bilinear",
                antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return out

    return convert(train), convert(test)


IMAGENETTE_COPIES = ("imagenette-224.tar.gz", "imagenette2-320", "imagenette2-320.tgz",
                     "imagenette2-160", "imagenette2-160.tgz", "imagenette2", "imagenette2.tgz",
                     "imagenette")


def find_imagenette(root: Path, download: bool) -> Path:
    """A local copy of Imagenette under ``root`` (a folder or archive of train/ and val/), or
    the 320 px release fetched by torchvision (its checksum verified) with ``download``."""
    for name in IMAGENETTE_COPIES:
        candidate = root / name
        if candidate.is_file() or (candidate.is_dir() and any(candidate.rglob("train"))):
            return candidate
    if not download:
        raise DataError(f"imagenette not found under {root}: looked for "
                        f"{', '.join(IMAGENETTE_COPIES)}. Pass --download to fetch the 320 px "
                        "release (checksum verified), --data PATH for a copy elsewhere, or "
                        "point --data-root (or the VGGNET_DATA variable) at its folder")
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        datasets.Imagenette(str(root), split=split, size="320px", download=split == "train")
    return root / "imagenette2-320"


def _digits(seed: int):
    """scikit-learn's handwritten digits (real scans, 8x8, 17 grey levels) as 32x32 RGB."""
    pixels, labels = _digits_arrays()
    x = torch.from_numpy(pixels).float().div(16).unsqueeze(1)  # N x 1 x 8 x 8 in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    images = (x * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    data = ImageTensors(images, torch.from_numpy(labels).long(), [str(d) for d in range(10)])
    return split_fraction(data, 0.2, seed)


def _digits_arrays():
    """The digits' 8x8 images and labels from the file scikit-learn ships, read without
    importing scikit-learn (1.2 s, in every process that trains the demo); load_digits if the
    file is not where it has always been."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target
