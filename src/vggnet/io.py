"""Image decoding and atomic file writes: a leaf of the package.

One decoder serves data sets, streamed folders and prediction alike: any mode (greyscale,
RGBA, palette, CMYK, 16-bit, float), EXIF orientation applied, and a one-line
:class:`~vggnet.errors.ImageReadError` for anything that is not a readable image.

Decompression bombs: Pillow warns when an image has more than ``PIL.Image.MAX_IMAGE_PIXELS``
pixels (89,478,485 by default, about 9459 x 9459) and refuses one with more than twice that.
vggnet refuses anything above ``MAX_IMAGE_PIXELS`` itself, from the header alone, before any
pixel is decoded, and never changes Pillow's setting: a program that raises
``PIL.Image.MAX_IMAGE_PIXELS`` raises vggnet's limit with it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ImageReadError, ImageTooLargeError, NotAnImageError, StorageError
from .faults import fault_point

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def max_image_pixels() -> int | None:
    """The largest image (in pixels) that is decoded: Pillow's current ``MAX_IMAGE_PIXELS``."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not Path(name).name.startswith(".")


def to_rgb(im):
    """Any Pillow image as 8-bit RGB; transparency is composited on white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray((arr / hi * 255).round().clip(0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageReadError("pixel values include NaN or infinity; fix or drop the image")
        im = Image.fromarray((arr.clip(0, 1) * 255).round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _refuse_bomb(name: str, size: tuple[int, int]) -> None:
    limit = max_image_pixels()
    if limit is not None and size[0] * size[1] > limit:
        raise ImageTooLargeError(
            f"{name}: refused, {size[0]} x {size[1]} is too many pixels for a safe decode "
            f"(more than {limit:,}); downscale it first")


def open_image(src: str | Path | bytes, draft: int | None = None, name: str | None = None):
    """Open, check and decode one image (a path or the file's bytes) as a Pillow RGB image,
    EXIF rotation applied. With ``draft``, a JPEG may be decoded at a reduced scale whose
    shorter side is still at least ``draft`` (much faster for large photographs)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(src, bytes):
        name = name or "image"
        if not src:
            raise ImageReadError(f"{name}: empty file (0 bytes)")
        fp = io.BytesIO(src)
    else:
        path = Path(src)
        name = name or str(path)
        if not path.is_file():
            raise ImageReadError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{name}: empty file (0 bytes)")
        fp = path
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; vggnet refuses there instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
        with im:
            _refuse_bomb(name, im.size)
            if draft is not None and im.format == "JPEG":
                w, h = im.size
                f = draft / min(w, h)
                im.draft("RGB", (max(1, int(w * f)), max(1, int(h * f))))
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))
    except ImageReadError as exc:
        msg = str(exc)
        raise type(exc)(msg if msg.startswith(name) else f"{name}: {msg}") from None
    except Image.DecompressionBombError as exc:  # a program lowered Pillow's limit meanwhile
        raise ImageTooLargeError(f"{name}: refused, too many pixels for a safe decode ({exc}); "
                             "downscale it first") from None
    except UnidentifiedImageError:
        what = Path(name).suffix or "an image"
        raise NotAnImageError(f"{name}: not an image Pillow can read (is it really "
                             f"{what}?)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name}: corrupt or truncated image ({exc})") from None


def resize_shorter_side(im, size: int):
    """A Pillow image resized isotropically so that its shorter side is ``size`` (bilinear,
    antialiased when shrinking): the one resize of data sets, streamed folders and prediction."""
    from PIL import Image

    w, h = im.size
    scale = size / min(w, h)
    return im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR,
                     reducing_gap=3.0)


def resize_center_crop(im, size: int, crop: int | None = None):
    """Shorter side to ``size``, then a centre crop of ``crop`` (default ``size``) pixels."""
    crop = crop or size
    im = resize_shorter_side(im, size)
    nw, nh = im.size
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return im.crop((left, top, left + crop, top + crop))


def decode_image(src: str | Path | bytes, size: int | None = None,
                 name: str | None = None) -> np.ndarray:
    """Decode one image to uint8 H x W x 3 RGB, its shorter side resized to ``size`` and
    centre-cropped to ``size`` x ``size`` (as is, when ``size`` is None)."""
    im = open_image(src, draft=size, name=name)
    if size is not None and im.size != (size, size):
        im = resize_center_crop(im, size)
    return np.asarray(im, dtype=np.uint8)


def find_images(paths) -> list[Path]:
    """Expand folders (recursively) into their image files; keep files as given."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.name))
            if not found:
                raise ImageReadError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        else:
            out.append(p)
    return out


# --- atomic writes --------------------------------------------------------------------------

# what a full or read-only disk looks like to a write: the one-line error below, not a traceback
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                   errno.EROFS: "the folder is on a read-only file system",
                   errno.EACCES: "no permission to write there",
                   errno.EPERM: "no permission to write there"}


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` via ``write(tmp)`` and an atomic rename; the old file survives any crash.

    A disk that is full or read-only raises :class:`~vggnet.errors.StorageError` (one line
    that names the file and says the previous version is kept), and leaves no temporary file."""
    path = Path(path)
    try:
        return _atomic_write(path, write)
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS or isinstance(exc, StorageError):
            raise
        error = StorageError(f"cannot write {path}: {_STORAGE_ERRNOS[exc.errno]} "
                             f"({exc.strerror}); the previous version of the file, if any, is "
                             "kept: free some space (or choose another folder) and run again "
                             "(a training run continues with --resume)")
        error.errno, error.strerror, error.filename = exc.errno, exc.strerror, str(path)
        raise error from None


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are ordinary files
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        fault_point("write.before_rename", path.name)
        os.replace(tmp, path)
        fault_point("write.after_rename", path.name)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, data: dict) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
