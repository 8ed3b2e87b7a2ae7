"""What a folder or tar of images holds, read before any decoding: how many images and how much
memory they take decoded, and the sizes of a sample of them (from their headers)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..io import is_image_name
from .datasets import BUILTIN, split_root


def estimate_decoded_bytes(source: str | Path, image_size: int | None) -> tuple[int, int] | None:
    """(number of images, bytes as uint8 at ``image_size``) of a folder or tar, counted from
    the names alone (a tar is read through once, nothing decoded); None for built-in sets
    or when the size cannot be known before decoding."""
    path = Path(source).expanduser()
    if not path.exists() or image_size is None:
        return None
    if path.is_dir():
        n = sum(1 for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            n = sum(1 for m in tf if m.isfile() and is_image_name(m.name))
    else:
        return None
    return n, n * 3 * image_size * image_size


def survey_sizes(source: str | Path, limit: int = 200) -> list[tuple[int, int]] | None:
    """(width, height) of up to ``limit`` images of a folder or tar (its training split where
    it has one), spread evenly over its files, read from the headers alone (nothing is
    decoded; unreadable files are left out); None for built-in sets and missing paths."""
    from PIL import Image

    path = Path(source).expanduser()
    if str(source).lower() in BUILTIN or not path.exists():
        return None
    sizes = []

    def add(fp):
        try:
            with Image.open(fp) as im:
                sizes.append(im.size)
        except Exception:  # noqa: BLE001 - any unreadable file is the decoder's to report
            pass

    if path.is_dir():
        path = split_root(path)
        files = sorted(p for p in ((path / "train") if (path / "train").is_dir() else path)
                       .rglob("*") if p.is_file() and is_image_name(p.name))
        for p in files[::max(1, len(files) // limit)][:limit]:
            add(p)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            for member in tf:
                if len(sizes) >= limit:
                    break
                if member.isfile() and is_image_name(member.name):
                    add(io.BytesIO(tf.extractfile(member).read()))
    return sizes
