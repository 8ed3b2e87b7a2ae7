"""The decoded-data cache: images decoded once (JPEG/PNG -> uint8 tensors) and kept on disk
under ``VGGNET_CACHE`` (default ``~/.cache/vggnet``), each file with its SHA-256 beside it."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from ..errors import StorageError
from ..io import atomic_write, sha256_file

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("VGGNET_CACHE", Path.home() / ".cache" / "vggnet"))


def cache_key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def source_fingerprint(path: Path):
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached_splits(key: str, build: Callable[[], dict], make: Callable) -> dict:
    """``build()`` -> {split: images, labels and classes}, cached as a tensor file under
    cache_dir(); ``make(images, labels, classes)`` rebuilds one split from the cache.

    The file's SHA-256 is written beside it and checked on every read: a cache that is
    truncated, corrupted or half-written (by a crash, a full disk, a bad sector) is rebuilt
    from the source, never trusted. A cache that cannot be written (disk full, read-only
    cache folder) is skipped with a warning: the data are decoded again next time."""
    path = cache_dir() / "decoded" / f"{key}.pt"
    stamp = path.with_suffix(".sha256")
    if path.is_file():
        problem = _cache_problem(path, stamp)
        if problem is None:
            try:
                blob = torch.load(path, weights_only=True)
                return {s: make(v["images"], v["labels"], list(v["classes"]))
                        for s, v in blob.items()}
            except Exception as exc:  # a file that matches its checksum but does not load
                problem = f"it does not load ({type(exc).__name__})"
        log.warning("decoded-data cache %s is not usable (%s): rebuilding it", path, problem)
        path.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
    splits = build()
    try:
        atomic_write(path, lambda tmp: torch.save(
            {s: {"images": v.images, "labels": v.labels, "classes": v.classes}
             for s, v in splits.items()}, tmp))
        digest = sha256_file(path)
        atomic_write(stamp, lambda tmp: tmp.write_text(digest + "\n"))
    except StorageError as exc:
        log.warning("%s; the decoded data are not cached and will be decoded again next time",
                    exc)
        path.unlink(missing_ok=True)
    return splits


def _cache_problem(path: Path, stamp: Path) -> str | None:
    """Why a cache file cannot be trusted, or None when its SHA-256 matches the one kept."""
    if not stamp.is_file():
        return "its checksum file is missing"
    if sha256_file(path) != stamp.read_text().strip():
        return "its SHA-256 differs from the one written with it (truncated or corrupted)"
    return None
