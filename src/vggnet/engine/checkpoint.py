"""Checkpoints that survive crashes and cannot run code.

A run directory holds, after every epoch:

* ``last.safetensors`` / ``best.safetensors``: weights, with the model config, class names and
  preprocessing in the file's metadata, so evaluation, prediction and export need nothing else;
* ``last.json`` / ``best.json``: the same metadata, readable, plus metrics and versions;
* ``last.state.pt``: everything ``--resume`` needs (weights, optimizer, scheduler, RNG states,
  epoch, history), read with ``torch.load(weights_only=True)``.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the old one, so a crash at any moment leaves the previous complete file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..models import WeightsError, create_model, load_weights, save_weights
from ..models.weights import read_metadata


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` via ``write(tmp)`` and an atomic rename; the old file survives any crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are ordinary files
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
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


def software_versions() -> dict:
    import torchvision

    from .. import __version__

    return {"vggnet": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def save_model_checkpoint(model, path: Path, meta: dict) -> Path:
    """Weights (.safetensors) and metadata (.json beside it), each written atomically."""
    path = Path(path)
    atomic_write(path, lambda p: save_weights(model, p, extra_metadata=meta))
    full = {"model_config": getattr(model, "_orig_mod", model).model_config, **meta}
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


def load_checkpoint(run_or_file: str | Path, which: str = "best", device="cpu"):
    """(model in eval mode, metadata) from a vggnet checkpoint alone."""
    path = resolve_checkpoint(run_or_file, which)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: vggnet checkpoints are .safetensors files; to use "
                           "torchvision or timm weights, build the model with --weights")
    try:
        meta = read_metadata(path)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    if "model_config" not in meta:
        raise WeightsError(f"{path} carries no vggnet model config")
    config = dict(meta["model_config"])
    model = create_model(config.pop("name"), **config)
    load_weights(model, path, strict_head=True)
    return model.to(device).eval(), meta


def save_state(path: Path, state: dict) -> Path:
    return atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot resume from {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
