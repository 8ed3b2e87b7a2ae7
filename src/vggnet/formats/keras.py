"""Keras' VGG16 and VGG19 weights, read with h5py and renamed to vggnet's layers.

Three files are understood:

* the legacy HDF5 weights of ``keras.applications`` (``vgg16_weights_tf_dim_ordering_tf_kernels
  .h5`` and its ``_notop`` twin) and any ``model.save("x.h5")``: layers by name
  (``block3_conv2``, ``fc1``, ``predictions``), weights in the order of their ``weight_names``;
* Keras 3's ``.weights.h5`` (``model.save_weights``): layers by class and position
  (``layers/conv2d_7/vars/0``), numbered in the model's order;
* Keras 3's ``.keras`` archive, whose ``model.weights.h5`` is the above.

Keras stores convolution kernels as (height, width, in, out) and dense kernels as (in, out):
they become PyTorch's (out, in, height, width) and (out, in). Keras flattens the last feature
map in (height, width, channel) order, PyTorch in (channel, height, width): the rows of the
first dense layer are reordered to match. The block structure (which convolution is
``conv4_2``) comes from the paper's table, matched on the kernels' sizes and channels.

Keras' VGG weights expect its "caffe" preprocessing (BGR, 0-255, ImageNet mean subtracted, no
std): :data:`vggnet.models.normalization.CAFFE`, which a model loaded with them carries.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError

# one configuration: for each layer, (out channels, kernel size) of a convolution, or "M" for
# a max-pooling that ends a block (other layers are left out)
Layout = list

SUFFIXES = (".h5", ".hdf5", ".keras")
INSTALL = "pip install 'vggnet[keras]'"
_HEAD = ("fc6", "fc7", "fc8")
_KERAS3_LAYER = re.compile(r"(conv2d|dense)(?:_(\d+))?$")


def is_keras_file(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() in SUFFIXES


def read_keras_weights(path, layouts: dict[str, Layout]) -> dict[str, torch.Tensor]:
    """A vggnet-named state dict (``features.conv1_1.weight`` ... ``head.fc8.bias``) from a
    Keras VGG weights file (see the module's docstring for the formats). ``layouts``: the
    paper's configurations by name, whose convolutions name the file's (see :data:`Layout`;
    :func:`vggnet.models.weights.read_state_dict` passes them)."""
    h5py = _need_h5py()
    path = Path(path)
    try:
        with _open(h5py, path) as f:
            layers = _keras3_layers(f) if "layers" in f and "layer_names" not in f.attrs \
                else _legacy_layers(f)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path} is not a readable Keras weights file ({exc})") from None
    return _to_vggnet(layers, path, layouts)


def _need_h5py():
    try:
        import h5py
    except ImportError:
        raise WeightsError(f"reading Keras weights needs the h5py package: {INSTALL}") from None
    return h5py


def _open(h5py, path: Path):
    if path.suffix.lower() != ".keras":
        return h5py.File(path, "r")
    with zipfile.ZipFile(path) as archive:  # Keras 3's archive: config + model.weights.h5
        if "model.weights.h5" not in archive.namelist():
            raise WeightsError(f"{path} is a zip file without model.weights.h5: not a .keras "
                               "model archive")
        return h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _legacy_layers(f) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, its weights) in model order, from a Keras 2 style HDF5 file."""
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
        raise WeightsError(f"{f.filename} has neither Keras' layer_names nor a layers/ group: "
                           "not a Keras weights file")
    out = []
    for name in map(_text, group.attrs["layer_names"]):
        names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if names:
            out.append((name, [np.asarray(group[name][w]) for w in names]))
    return out


def _keras3_layers(f) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, its weights) in model order, from a Keras 3 ``.weights.h5``: layers are
    named by class and numbered in order (conv2d, conv2d_1, ...; dense, dense_1, ...)."""
    found = {"conv2d": [], "dense": []}
    for name, layer in f["layers"].items():
        if "vars" not in layer or not len(layer["vars"]):
            continue  # pooling, flatten, input: no weights
        m = _KERAS3_LAYER.match(name)
        if not m:
            raise WeightsError(f"{f.filename} has a layer {name!r} with weights: a VGG has only "
                               "Conv2D and Dense layers")
        arrays = [np.asarray(layer["vars"][k]) for k in sorted(layer["vars"], key=int)]
        found[m.group(1)].append((int(m.group(2) or 0), name, arrays))
    return [(name, arrays) for kind in ("conv2d", "dense")
            for _, name, arrays in sorted(found[kind])]


def _to_vggnet(layers, path: Path, layouts: dict[str, Layout]) -> dict[str, torch.Tensor]:
    convs = [(n, w) for n, w in layers if w[0].ndim == 4]
    denses = [(n, w) for n, w in layers if w[0].ndim == 2]
    if not convs:
        raise WeightsError(f"{path} holds no convolution kernels: not a VGG's weights")
    for name, (kernel, *_) in convs:
        if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] > kernel.shape[2]:
            raise WeightsError(f"{path}: the kernel of {name} has shape {kernel.shape}, not "
                               "(height, width, in, out): Theano-ordered weights "
                               "(th_dim_ordering) are not supported; use the tf_dim_ordering "
                               "file")
    tags = _block_tags([(k.shape[3], k.shape[0]) for _, (k, *_) in convs], path, layouts)
    sd = {}
    for tag, (_, (kernel, *bias)) in zip(tags, convs):
        sd[f"features.conv{tag}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        if bias:
            sd[f"features.conv{tag}.bias"] = torch.from_numpy(np.array(bias[0]))
    if len(denses) > len(_HEAD):
        raise WeightsError(f"{path} has {len(denses)} dense layers; a VGG's head has at most 3")
    channels = convs[-1][1][0].shape[3]
    for i, (layer, (_, (kernel, *bias))) in enumerate(zip(_HEAD, denses)):
        weight = kernel.T
        if i == 0 and kernel.shape[0] != channels:  # flattened (H, W, C) rows -> (C, H, W)
            side = int(round((kernel.shape[0] / channels) ** 0.5))
            if side * side * channels != kernel.shape[0]:
                raise WeightsError(f"{path}: the first dense layer takes {kernel.shape[0]} "
                                   f"inputs, not a square map of {channels} channels")
            weight = kernel.reshape(side, side, channels, -1).transpose(3, 2, 0, 1) \
                .reshape(kernel.shape[1], -1)
        sd[f"head.{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        if bias:
            sd[f"head.{layer}.bias"] = torch.from_numpy(np.array(bias[0]))
    return sd


def _block_tags(convs: list[tuple[int, int]], path: Path, layouts) -> list[str]:
    """``["1_1", "1_2", "2_1", ...]`` for the configuration of the paper's table whose
    convolutions have these (out channels, kernel size)."""
    for tokens in layouts.values():
        if [t for t in tokens if t != "M"] != convs:
            continue
        tags, block, index = [], 1, 0
        for token in tokens:
            if token != "M":
                index += 1
                tags.append(f"{block}_{index}")
            elif token == "M":
                block, index = block + 1, 0
        return tags
    raise WeightsError(f"{path}: its {len(convs)} convolutions (out channels "
                       f"{[c for c, _ in convs]}) match none of the paper's configurations "
                       "(VGG11/13/16/19)")
