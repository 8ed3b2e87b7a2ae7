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
# timm's naming: one name for the architecture and the source (``vgg16_bn.tv_in1k``: the
# torchvision weights trained on ImageNet-1k)
TAG = ".tv_in1k"
# what ``vggnet train --weights imagenet`` builds when no model is named: the deepest VGG with
# batch norm short of VGG-19-BN (73.36% top-1 against 74.22%, at 0.8x its compute)
DEFAULT_IMAGENET_MODEL = "vgg16_bn"
# how the ImageNet weights saw their images (torchvision's recipe): shorter side to 256, a
# 224 px crop (random in training, the centre in evaluation), ImageNet's mean and std
IMAGENET_SCALE, IMAGENET_CROP = 256, 224
_HASH = re.compile(r"-([a-f0-9]{8,})\.")


def is_published(value) -> bool:
    """Does ``value`` name published ImageNet weights (``imagenet``, ``vgg16_bn.tv_in1k``)?"""
    if not isinstance(value, str):
        return False
    value = value.lower()
    return value in PRETRAINED_NAMES or (value.endswith(TAG) and value[:-len(TAG)] in URLS)


def published_model(value: str, model: str | None = None) -> str | None:
    """The model whose weights ``value`` names: the tagged name's (``vgg16_bn.tv_in1k`` ->
    ``vgg16_bn``), else ``model``; a tagged name that contradicts ``model`` is refused."""
    value = value.lower()
    if not value.endswith(TAG):
        return model
    tagged = value[:-len(TAG)]
    if model is not None and model != tagged:
        raise WeightsError(f"weights {value} are {tagged}'s, but the model is {model}: drop "
                           f"one of the two, or use weights=imagenet for {model}'s own")
    return tagged


def cached_path(name: str) -> Path:
    """Where ``name``'s ImageNet weights are looked for and downloaded to: torchvision's own
    cache, ``$TORCH_HOME/hub/checkpoints/`` (by default ``~/.cache/torch/hub/checkpoints/``),
    under the file name of the download (``vgg16_bn-6c64b313.pth``)."""
    if name not in URLS:
        raise WeightsError(f"no published ImageNet weights for {name} (torchvision has them "
                           f"for {', '.join(URLS)}); train it (configs/imagenet/) or pass a "
                           "weights file")
    return Path(torch.hub.get_dir()) / "checkpoints" / URLS[name].rsplit("/", 1)[1]


def pretrained_file(name: str, progress: bool = True) -> Path:
    """The verified local copy of ``name``'s ImageNet weights, downloading it if needed."""
    dst = cached_path(name)
    url = URLS[name]
    expected = _HASH.search(dst.name).group(1)
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
                               f"offline, copy {dst.name} into {dst.parent} or pass the file "
                               "with weights=PATH") from None
    elif not sha256_file(dst).startswith(expected):
        raise WeightsError(f"{dst} is corrupt or altered (its SHA-256 does not start with "
                           f"{expected}); delete it to download it again")
    return dst
