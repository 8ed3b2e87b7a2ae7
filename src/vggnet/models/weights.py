"""Reading, converting and loading weights: torchvision's, timm's and vggnet's own formats.

vggnet's own names follow the paper (``features.conv3_2.weight``, ``head.fc6.weight``).
torchvision numbers the layers (``features.10.weight``, ``classifier.0.weight``); timm numbers
them the same way and keeps fc6/fc7 as convolutions (``pre_logits.fc1``) with ``head.fc`` as
fc8. The layers of a vggnet model run in torchvision's order, so converting is a renaming plus
a reshape of the fully connected weights.

Loading never unpickles arbitrary objects: ``.safetensors`` files hold only tensors and
``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import WeightsError, WeightsMismatchError
from .registry import get_builder, list_models

log = logging.getLogger("vggnet")

FORMATS = ("vggnet", "torchvision", "timm")
_TV_HEAD = {"classifier.0": "head.fc6", "classifier.3": "head.fc7", "classifier.6": "head.fc8"}
_TIMM_HEAD = {"pre_logits.fc1": "head.fc6", "pre_logits.fc2": "head.fc7", "head.fc": "head.fc8"}
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "weights")


@dataclass
class LoadReport:
    format: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


# --- reading ------------------------------------------------------------------------------

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
        sd = _read_file(path)
    for key in _WRAPPER_KEYS:  # training checkpoints wrap the state dict
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
            break
    clean = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue  # metadata such as epoch numbers, never weights
        for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
            while key.startswith(prefix):
                key = key[len(prefix):]
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

def _feature_names(model) -> list[str]:
    return [name for name, _ in model.features.named_children()]


def to_vggnet_state_dict(sd: Mapping[str, torch.Tensor], model, fmt: str | None = None):
    """Rename a torchvision or timm state dict to the names of ``model`` (a vggnet VGG)."""
    fmt = fmt or detect_format(sd)
    if fmt == "vggnet":
        return dict(sd)
    names = _feature_names(model)
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
    index = {name: i for i, name in enumerate(_feature_names(model))}
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


# --- matching -----------------------------------------------------------------------------

def infer_architecture(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The registered model (with width, if not 1) whose convolutional layers these fit."""
    try:
        fmt = detect_format(sd)
    except WeightsError:
        return None
    got = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("features.")}
    convs = [(k, v) for k, v in sd.items() if k.startswith("features.") and v.ndim == 4
             and k.endswith(".weight")]
    if not convs:
        return None
    first = min(convs, key=lambda kv: _layer_order(kv[0]))[1]
    width = first.shape[0] / 64
    for name in list_models():
        with torch.device("meta"):
            candidate = get_builder(name)(width=width, in_channels=first.shape[1],
                                     head="linear", num_classes=1)
        feats = {k: v for k, v in candidate.state_dict().items() if k.startswith("features.")}
        if fmt != "vggnet":
            index = {n: i for i, n in enumerate(_feature_names(candidate))}
            feats = {f"features.{index[k.split('.')[1]]}.{k.split('.', 2)[2]}": v
                     for k, v in feats.items()}
        if {k: tuple(v.shape) for k, v in feats.items()} == got:
            return name if width == 1 else f"{name} (width {width:g})"
    return None


def _layer_order(key: str):
    part = key.split(".")[1]
    if part.isdigit():
        return (int(part), 0)
    m = re.match(r"[a-z]+(\d+)_(\d+)", part)
    return (int(m.group(1)), int(m.group(2))) if m else (10**9, 0)


def fits_message(sd) -> str:
    arch = infer_architecture(sd)
    return f"these weights fit {arch}" if arch else "these weights fit no registered VGG"


def load_weights(model, source, *, strict_head: bool = False) -> LoadReport:
    """Load weights of any supported format into ``model``.

    The convolutional layers must match exactly, or :class:`WeightsMismatchError` names the
    first offending keys and the architecture the weights fit. The head is loaded when it
    matches; otherwise (another number of classes, another head type) the backbone is loaded
    and the unmatched head layers keep their fresh initialisation, with a message saying so.
    ``strict_head=True`` turns that case into an error too.
    """
    raw = read_state_dict(source)
    fmt = detect_format(raw)
    sd = to_vggnet_state_dict(raw, model, fmt)
    target = model.state_dict()
    report = LoadReport(format=fmt)

    # Fully connected weights load into convolutions and back by a reshape of the same numbers.
    for key, value in list(sd.items()):
        if key.startswith("head.") and key in target and value.shape != target[key].shape \
                and value.numel() == target[key].numel():
            sd[key] = value.reshape(target[key].shape)

    _check_backbone(model, sd, target, raw)
    head_target = {k: v for k, v in target.items() if k.startswith("head.")}
    head_given = {k: v for k, v in sd.items() if k.startswith("head.")}
    logits = f"head.{model.head.logits_layer}."
    fitting = {k: v for k, v in head_given.items()
               if k in head_target and v.shape == head_target[k].shape}
    unmatched = sorted(set(head_target) - set(fitting))
    extra = sorted(set(head_given) - set(fitting))
    if unmatched and strict_head:
        raise WeightsMismatchError(
            f"the head of the weights does not fit {model.arch} with head={model.head_kind!r} "
            f"and num_classes={model.num_classes}: {unmatched[:3]} do not match")
    if unmatched:
        if all(k.startswith(logits) for k in unmatched) and \
                all(k.startswith(logits) for k in extra) and extra:
            given = head_given[f"{logits}weight"].shape[0]
            msg = (f"{logits}* re-initialised for {model.num_classes} classes (the weights "
                   f"have {given}); the rest of the network was loaded")
        else:
            msg = (f"the head ({model.head_kind!r}) was initialised afresh: the weights' head "
                   f"does not fit it ({', '.join(unmatched[:2])}...); the convolutional "
                   "layers were loaded")
        report.messages.append(msg)
        log.warning(msg)
        report.reinitialised = unmatched
    state = {k: v for k, v in sd.items() if k.startswith("features.")}
    state.update(fitting)
    model.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    return report


def _check_backbone(model, sd: dict, target: dict, raw: dict) -> None:
    """The convolutional layers must match exactly; the error names the first offenders and
    the architecture the weights fit."""
    problems = []
    for key in target:
        if key.startswith("features.") and key not in sd:
            problems.append(f"{key} is missing from the weights")
    for key, value in sd.items():
        if not key.startswith("features."):
            continue
        if key not in target:
            problems.append(f"unexpected key {key}")
        elif value.shape != target[key].shape:
            problems.append(f"{key} has shape {tuple(value.shape)} in the weights but "
                            f"{tuple(target[key].shape)} in the model")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise WeightsMismatchError(
            f"the weights do not fit {model.arch} (width {model.model_config['width']:g}): "
            + "; ".join(problems[:3]) + f"{more}. {fits_message(raw)}.")


# --- vggnet's own files -------------------------------------------------------------------

def save_weights(model, path, extra_metadata: Mapping[str, object] | None = None) -> Path:
    """Write the model's weights as safetensors with its config in the file's metadata."""
    from safetensors.torch import save_file

    module = getattr(model, "_orig_mod", model)  # never save the torch.compile wrapper
    path = Path(path)
    meta = {"format": "vggnet", "model_config": json.dumps(module.model_config)}
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
