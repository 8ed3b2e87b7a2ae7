"""torchvision's published ImageNet weights, downloaded once and checksum-verified.

``create_model("vgg16", weights="imagenet")`` fetches ``vgg16-397923af.pth`` into PyTorch's
cache (``$TORCH_HOME/hub/checkpoints``); the SHA-256 of the file must start with the hash in
its name, both right after the download and every time a cached copy is used, and the file
is then read as tensors only (never unpickled as Python objects).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import WeightsError
from ..io import sha256_file

# The ImageNet weights torchvision publishes (its ``*_Weights.IMAGENET1K_V1`` entries).
URLS = {
    "vgg11": "https://download.pytorch.org/models/vgg11-8a719046.pth",
    "vgg11_bn": "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
    "vgg13": "https://download.pytorch.org/models/vgg13-19584684.pth",
    "vgg13_bn": "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg19_bn": "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth",
}
PRETRAINED_NAMES = ("imagenet",)
_HASH = re.compile(r"-([a-f0-9]{8,})\.")


def pretrained_file(name: str, progress: bool = True) -> Path:
    """The verified local copy of ``name``'s ImageNet weights, downloading it if needed."""
    if name not in URLS:
        have = ", ".join(URLS)
        raise WeightsError(f"no published ImageNet weights for {name} (torchvision has them for "
                           f"{have}); train it (configs/imagenet/) or pass a weights file")
    url = URLS[name]
    filename = url.rsplit("/", 1)[1]
    expected = _HASH.search(filename).group(1)
    dst = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:  # a temporary file, checked, then renamed: a broken download leaves nothing
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
        except RuntimeError as exc:
            if "invalid hash value" in str(exc):
                raise WeightsError(f"the download of {url} is corrupt (SHA-256 does not start "
                                   f"with {expected}); nothing was kept: try again") from None
            raise WeightsError(f"cannot download {url}: {exc}") from None
        except OSError as exc:
            raise WeightsError(f"cannot download {url} ({exc.__class__.__name__}: {exc}); "
                               f"offline, copy {filename} into {dst.parent} or pass the file "
                               "with weights=PATH") from None
    elif not sha256_file(dst).startswith(expected):
        raise WeightsError(f"{dst} is corrupt or altered (its SHA-256 does not start with "
                           f"{expected}); delete it to download it again")
    return dst
