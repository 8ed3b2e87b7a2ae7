"""Reading user images robustly: any mode (greyscale, RGBA, palette, CMYK, 16-bit), EXIF
orientation, and a one-line error for files that are not readable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.datasets import IMAGE_EXTENSIONS

# Pillow refuses images over this many pixels (a decompression bomb); 16k x 16k is generous
# for real photographs and still stops a 50,000 x 50,000 PNG of a few kilobytes.
MAX_PIXELS = 16384 * 16384


class ImageReadError(ValueError):
    """A file that is not a readable image; the message is one line."""


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


def open_image(path: str | Path, draft: int | None = None):
    """Open, verify and decode one image as RGB (EXIF rotation applied). With ``draft``, a
    JPEG may be decoded at a reduced scale whose shorter side is still at least ``draft``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            if draft is not None and im.format == "JPEG":
                w, h = im.size
                f = draft / min(w, h)
                im.draft("RGB", (max(1, int(w * f)), max(1, int(h * f))))
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))
    except ImageReadError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused, too many pixels for a safe decode ({exc}); "
                             "downscale it first") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image Pillow can read (is it really "
                             f"{path.suffix or 'an image'}?)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None


def find_images(paths) -> list[Path]:
    """Expand folders (recursively) into their image files; keep files as given."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ImageReadError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        else:
            out.append(p)
    return out
