"""Reading and converting weights: torchvision's, timm's, Keras' and vggnet's own formats. Pure
functions of state dicts and files: nothing here builds a model (see factory.py for matching
weights to models and loading them).

vggnet's own names follow the paper (``features.conv3_2.weight``, ``head.fc6.weight``).
torchvision numbers the layers (``features.10.weight``, ``classifier.0.weight``); timm numbers
them the same way and keeps fc6/fc7 as convolutions (``pre_logits.fc1``) with ``head.fc`` as
fc8. The layers of a vggnet model run in torchvision's order, so converting is a renaming plus
a reshape of the fully connected weights. Keras' HDF5 files are read by
:mod:`vggnet.formats.keras`.

Loading never unpickles arbitrary objects: ``.safetensors`` files hold only tensors and
``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import WeightsError
from ..formats.keras import is_keras_file, read_keras_weights
from .configs import CONFIGS, conv_spec


FORMATS = ("vggnet", "torchvision", "timm", "keras")
_TV_HEAD = {"classifier.0": "head.fc6", "classifier.3": "head.fc7", "classifier.6": "head.fc8"}
_TIMM_HEAD = {"pre_logits.fc1": "head.fc6", "pre_logits.fc2": "head.fc7", "head.fc": "head.fc8"}
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "weights")


# --- reading ------------------------------------------------------------------------------

def keras_layouts() -> dict[str, list]:
    """The paper's configurations as the Keras reader takes them: each convolution's (out
    channels, kernel size), "M" for each max-pooling (LRN and whitening layers left out)."""
    return {name: [conv_spec(t) if conv_spec(t) else t for t in tokens
                   if conv_spec(t) or t == "M"] for name, tokens in CONFIGS.items()}


def read_state_dict(source) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a path or a (possibly wrapped) state dict."""
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        if is_keras_file(path):
            return read_keras_weights(path, keras_layouts())
        sd = _read_file(path)
    for key in _WRAPPER_KEYS:  # training checkpoints wrap the state dict
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
            break
    clean = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue  # metadata such as epoch numbers, never weights
        while key.startswith(("module.", "_orig_mod.")):  # DDP, torch.compile, in any nesting
            key = key.partition(".")[2]
        clean[key] = value
    if not clean:
        raise WeightsError("the weights hold no tensors: is this a vggnet, torchvision or timm "
                           "VGG state dict?")
    return clean


def _read_file(path: Path) -> dict:
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty (0 bytes): the file was not written completely; "
                           "use another copy of the weights")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(
            f"refused to load {path}: it holds Python objects other than tensors, which could "
            f"run code when unpickled ({first[:160]}). Load only weights you trust, saved as "
            "a state dict or as .safetensors") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({exc}); it may be "
                           "truncated or of another format") from None


def detect_format(sd: Mapping[str, torch.Tensor]) -> str:
    """'vggnet', 'torchvision' or 'timm', from the names of a state dict."""
    keys = list(sd)
    numbered = any(re.match(r"features\.\d+\.", k) for k in keys)
    if any(k.startswith("features.conv") for k in keys):
        return "vggnet"
    if numbered and any(k.startswith(("pre_logits.", "head.fc.")) for k in keys):
        return "timm"
    if numbered:
        return "torchvision"
    raise WeightsError("cannot tell the format of these weights: expected vggnet names "
                       "('features.conv1_1.weight'), or torchvision/timm names "
                       f"('features.0.weight'); the first keys are {keys[:3]}")


# --- converting ---------------------------------------------------------------------------

def feature_names(model) -> list[str]:
    return [name for name, _ in model.features.named_children()]


def to_vggnet_state_dict(sd: Mapping[str, torch.Tensor], model, fmt: str | None = None):
    """Rename a torchvision or timm state dict to the names of ``model`` (a vggnet VGG)."""
    fmt = fmt or detect_format(sd)
    if fmt == "vggnet":
        return dict(sd)
    names = feature_names(model)
    head_map = _TV_HEAD if fmt == "torchvision" else _TIMM_HEAD
    out = {}
    for key, value in sd.items():
        m = re.match(r"features\.(\d+)\.(.+)$", key)
        if m:
            i = int(m.group(1))
            layer = names[i] if i < len(names) else f"#{i}"
            out[f"features.{layer}.{m.group(2)}"] = value
            continue
        layer, _, param = key.rpartition(".")
        out[f"{head_map.get(layer, layer)}.{param}"] = value
    return out


def to_torchvision_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under torchvision's names and shapes (``classifier.*`` as Linear)."""
    if model.head_kind == "linear":
        raise WeightsError("torchvision's VGG has the FC-4096 classifier; a model with the "
                           "'linear' head has no torchvision equivalent")
    index = {name: i for i, name in enumerate(feature_names(model))}
    back = {v: k for k, v in _TV_HEAD.items()}
    out = {}
    for key, value in model.state_dict().items():
        scope, layer, param = key.split(".", 2)
        if scope == "features":
            out[f"features.{index[layer]}.{param}"] = value.detach().clone()
        else:
            if param == "weight":
                value = value.reshape(value.shape[0], -1)
            out[f"{back[f'head.{layer}']}.{param}"] = value.detach().clone()
    return out


# --- vggnet's own files -------------------------------------------------------------------

def save_weights(model, path, extra_metadata: Mapping[str, object] | None = None) -> Path:
    """Write the model's weights as safetensors with its config in the file's metadata."""
    from safetensors.torch import save_file

    module = getattr(model, "_orig_mod", model)  # never save the torch.compile wrapper
    path = Path(path)
    meta = {"format": "vggnet", "model_config": json.dumps(module.model_config)}
    if getattr(module, "input_norm", None) is not None:  # e.g. Keras' caffe inputs
        meta["input_norm"] = json.dumps(module.input_norm.to_dict())
    for key, value in (extra_metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return path


def read_metadata(path) -> dict[str, object]:
    """The metadata saved by :func:`save_weights` (JSON values decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
