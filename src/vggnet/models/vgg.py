"""One VGG model class and one builder for every configuration of the paper.

Layers carry the paper's names (``conv3_2``, ``relu5_3``, ``pool4``, ``fc6``...), so that a
``state_dict`` reads like the paper and feature taps can be asked for by name. The order of
the layers is torchvision's, which makes the conversion to and from torchvision's index-based
names a renaming (see :mod:`vggnet.models.weights`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from .model_config import ACTIVATIONS, HEADS, ModelConfig
from .configs import CONFIGS, LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, conv_spec
from .init import init_layer
from .heads import HEAD_CLASSES, ConvHead
from .normalization import TORCHVISION
from .registry import register_model



def scaled(channels: int, width: float) -> int:
    """Channels of a layer under the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))




class LocalResponseNorm(nn.LocalResponseNorm):
    """Local response normalisation that also runs on bf16 and fp16 maps (PyTorch's CPU
    kernel has no bf16 version, so a model with bf16 weights, as the inference engine makes
    them, failed on A-LRN): low-precision inputs are normalised in float32, the result is
    cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def make_layers(cfg: Iterable, in_channels: int = 3, width: float = 1.0,
                batch_norm: bool = False, *, activation: str = "relu",
                pool_before_norm: bool = False, bn_momentum: float = 0.1,
                bn_weight: bool = True) -> nn.Sequential:
    """The convolutional part of a VGG, from a configuration of :data:`CONFIGS`.

    ``pool_before_norm`` moves a block's max pooling from after the activation of the
    convolution before it to straight after that convolution (airbench's order: batch norm and
    activation then run on a quarter of the pixels). ``bn_weight=False`` fixes the batch-norm
    scales at 1 (only their biases train).
    """
    cfg = list(cfg)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    block, index = 1, 0
    channels = in_channels
    act = ACTIVATIONS[activation]
    for position, token in enumerate(cfg):
        spec = conv_spec(token)
        if spec is not None:
            out, kernel = spec
            out = scaled(out, width)
            index += 1
            tag = f"{block}_{index}"
            layers[f"conv{tag}"] = nn.Conv2d(channels, out, kernel, padding=kernel // 2)
            pool_now = pool_before_norm and position + 1 < len(cfg) and cfg[position + 1] == "M"
            if pool_now:
                layers[f"pool{block}"] = nn.MaxPool2d(kernel_size=2, stride=2)
            if batch_norm:
                bn = nn.BatchNorm2d(out, momentum=bn_momentum)
                bn.weight.requires_grad_(bn_weight)
                layers[f"bn{tag}"] = bn
            layers[f"{activation}{tag}"] = act()
            channels = out
            if pool_now:
                block, index = block + 1, 0
        elif token == "M":
            if not (pool_before_norm and position and conv_spec(cfg[position - 1])):
                layers[f"pool{block}"] = nn.MaxPool2d(kernel_size=2, stride=2)
                block, index = block + 1, 0
            # else: it was placed straight after the convolution before it
        elif token == "W":
            if layers:
                raise ValueError("the whitening layer 'W' must come first in a configuration")
            # 2x2 patches of C channels: 4C directions, each with both signs (so that the
            # activation after it loses nothing), set by init_whitening, never trained
            layers["whiten"] = nn.Conv2d(channels, 2 * 4 * channels, 2)
            layers["whiten"].weight.requires_grad_(False)
            layers[f"{activation}0"] = act()
            channels = 2 * 4 * channels
        elif token == "LRN":
            # PyTorch (like Caffe) divides alpha by the window size; the paper's formula (from
            # Krizhevsky et al.) does not, so alpha is scaled to give the paper's normalisation.
            layers[f"norm{block}"] = LocalResponseNorm(
                LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)
        else:
            raise ValueError(f"unknown layer token {token!r} in a VGG configuration; "
                             "expected an int, (channels, kernel), 'M', 'W' or 'LRN'")
    return nn.Sequential(layers)


class VGG(nn.Module):
    """A VGG network: ``features`` (the convolutional blocks) and ``head``.

    Every model has the same interface: :meth:`forward_features`, :meth:`forward_head`,
    :meth:`reset_classifier`, :meth:`extract` (named feature taps) and :meth:`set_head`.
    """

    def __init__(self, cfg: list, *, name: str = "vgg", batch_norm: bool = False, **options):
        """``cfg``: the layer tokens (:mod:`vggnet.models.configs`); ``options``: the fields of
        :class:`~vggnet.models.model_config.ModelConfig`, validated there once."""
        super().__init__()
        config = ModelConfig(name=name, **options)
        self.arch = name
        self.cfg = list(cfg)
        self.input_norm = TORCHVISION  # what its inputs must look like (models/normalization)
        self.features = make_layers(self.cfg, config.in_channels, config.width, batch_norm,
                                    activation=config.activation,
                                    pool_before_norm=config.pool_before_norm,
                                    bn_momentum=config.bn_momentum, bn_weight=config.bn_weight)
        self.num_features = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        # each max-pooling halves the map (floor): the smallest input that survives them all
        # (and a whitening layer's 2x2 patches take one pixel)
        self.min_input_size = 2 ** sum(1 for token in self.cfg if token == "M") + \
            (1 if "W" in self.cfg else 0)
        self.config = config
        head_options = (dict(pool=config.head_pool, logit_scale=config.logit_scale)
                        if config.head == "linear" else {})
        self.head = HEAD_CLASSES[config.head](self.num_features, config.num_classes,
                                              config.fc_dim, config.dropout, **head_options)
        if not next(self.parameters()).is_meta:  # on the meta device there are no numbers
            self.reset_parameters()

    # Everything needed to build this model again (checkpoints carry it as a dict).
    @property
    def model_config(self) -> dict:
        return self.config.to_dict()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def init(self) -> str:
        return self.config.init

    # --- construction -----------------------------------------------------------------
    def reset_parameters(self, only=None) -> None:
        """Initialise every layer, or only the modules in ``only`` (those that loading
        weights into a model built without initialisation left empty)."""
        for module in self.features.modules():
            if only is not None and module not in only:
                continue
            if isinstance(module, nn.Conv2d):
                init_layer(module, self.init, is_head=False)
                if module is getattr(self.features, "whiten", None):
                    nn.init.zeros_(module.bias)  # its weights come from init_whitening
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                if module.affine:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        for module in self.head.modules():
            if only is not None and module not in only:
                continue
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                init_layer(module, self.init, is_head=True)

    @property
    def has_whitening(self) -> bool:
        return hasattr(self.features, "whiten")

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening layer from normalised training images (N, C, H, W).

        Its filters are the eigenvectors of the covariance of the images' 2x2 patches, each
        divided by the square root of its eigenvalue (plus ``eps``), with both signs: the layer
        decorrelates the patches and gives every direction unit variance (airbench's first
        layer; the idea of Coates & Ng's whitened patches). A few thousand images suffice.
        """
        if not self.has_whitening:
            raise ValueError(f"{self.arch} has no whitening layer (configuration token 'W')")
        conv = self.features.whiten
        k = conv.kernel_size
        if images.dim() != 4 or images.shape[1] != conv.in_channels:
            raise ValueError(f"init_whitening takes normalised images N x {conv.in_channels} x "
                             f"H x W; got {tuple(images.shape)}")
        x = images.detach().to(torch.float64)
        patches = x.unfold(2, k[0], 1).unfold(3, k[1], 1)  # N, C, H', W', kh, kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, conv.in_channels * k[0] * k[1])
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        order = eigenvalues.argsort(descending=True)
        filters = eigenvectors.T[order] / torch.sqrt(eigenvalues[order] + eps)[:, None]
        filters = filters.reshape(-1, conv.in_channels, *k)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))
        conv.bias.zero_()

    @property
    def head_kind(self) -> str:
        return self.head.kind

    def get_classifier(self) -> nn.Module:
        return self.head.last_layer()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer by a freshly initialised one with ``num_classes`` outputs."""
        old = self.head.last_layer()
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, 1)
        else:
            new = nn.Linear(old.in_features, num_classes)
        init_layer(new, self.init, is_head=True)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        setattr(self.head, self.head.logits_layer, new)
        self.config = replace(self.config, num_classes=num_classes)

    def set_head(self, kind: str) -> "VGG":
        """Switch between the ``classifier`` and ``conv`` heads, keeping the exact weights.

        The conversion is the paper's: fc6 becomes a 7x7 convolution, fc7 and fc8 1x1
        convolutions, by reshaping the same numbers. Returns ``self``.
        """
        if kind not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(map(repr, HEADS))}; got {kind!r}")
        if kind == self.head_kind:
            return self
        if "linear" in (kind, self.head_kind):
            raise ValueError("only the 'classifier' and 'conv' heads share weights; "
                             f"cannot convert a {self.head_kind!r} head to {kind!r}")
        ref = self.head.fc6.weight
        new = HEAD_CLASSES[kind](self.num_features, self.num_classes, self.config.fc_dim,
                                 self.config.dropout)
        new.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in ("fc6", "fc7", "fc8"):
                src, dst = getattr(self.head, layer), getattr(new, layer)
                dst.weight.copy_(src.weight.reshape(dst.weight.shape))
                dst.bias.copy_(src.bias)
        new.train(self.training)
        self.head = new
        self.config = replace(self.config, head=kind)
        return self

    # --- forward ------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """A one-line error for a batch the network cannot take, instead of one from deep
        inside a convolution or pooling layer."""
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return  # a graph is being captured: the checks would be baked in or warned about
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{self.arch} takes a batch of images N x C x H x W; got {shape} "
                             "(add a batch dimension with x[None] for one image)")
        if not x.is_floating_point():
            raise InputError(f"{self.arch} takes floating-point images; got {x.dtype} (raw "
                             "pixels? convert with x.float() / 255, then normalize with the "
                             "mean and std it was trained with)")
        param = next(self.parameters(), None)
        if (param is not None and x.dtype != param.dtype
                and not torch.is_autocast_enabled(x.device.type)):
            raise InputError(f"{self.arch}'s weights are {param.dtype} and the images "
                             f"{x.dtype}: cast the images (x.to({param.dtype})) or the model, "
                             "or run it under torch.autocast")
        if x.shape[1] != self.in_channels:
            raise InputError(f"{self.arch} was built for {self.in_channels} input channel(s); got "
                             f"{x.shape[1]} (convert the images, or build it with "
                             f"in_channels={x.shape[1]})")
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise InputError(f"{self.arch} needs images of at least {self.min_input_size}x"
                             f"{self.min_input_size} pixels (its max-pooling layers halve them "
                             f"{self.min_input_size.bit_length() - 1} times); got {h}x{w}: "
                             "resize them first (vggnet predict does this for you)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class-score map of the fully convolutional network (``head="conv"`` only)."""
        if not isinstance(self.head, ConvHead):
            raise ValueError("score_map needs the fully convolutional head: call "
                             "model.set_head('conv') first (the weights are kept)")
        return self.head.score_map(self.forward_features(x))

    def tap_names(self) -> list[str]:
        """Names accepted by :meth:`extract`, in the order the layers run."""
        return [n for n, _ in self.features.named_children()] + \
               [n for n, _ in self.head.named_children()]

    def extract(self, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of the named layers (e.g. ``["relu1_2", "relu3_3", "fc7"]``).

        Layers after the deepest one asked for are not run. In-place ReLUs are accounted
        for: a tap on a convolution returns its output before the ReLU.
        """
        names = list(dict.fromkeys([names] if isinstance(names, str) else names))
        order = self.tap_names()
        unknown = [n for n in names if n not in order]
        if unknown:
            raise KeyError(f"unknown layer name(s) {unknown} for {self.arch}; "
                           f"valid names: {', '.join(order)}")
        wanted = set(names)
        last = max(order.index(n) for n in names) if names else -1
        out: dict[str, torch.Tensor] = {}
        layers = list(self.features.named_children()) + list(self.head.named_children())
        for name, layer in layers[: last + 1]:
            if isinstance(layer, nn.ReLU) and any(t is x for t in out.values()):
                x = F.relu(x)  # do not overwrite a tapped tensor in place
            else:
                x = layer(x)
            if name in wanted:
                out[name] = x
        return {n: out[n] for n in names}


# The paper's names for the registered architectures (Table 1), used by summaries and errors.
PAPER_CONFIG: dict[str, str] = {}


def _vgg(name: str, config: str, batch_norm: bool, **options) -> VGG:
    return VGG(CONFIGS[config], name=name, batch_norm=batch_norm, **options)


def _builder(name: str, config: str, batch_norm: bool):
    def build(**options) -> VGG:
        return _vgg(name, config, batch_norm, **options)

    build.__name__ = build.__qualname__ = name
    suffix = " with batch normalisation" if batch_norm else ""
    build.__doc__ = f"VGG configuration {config} of the paper (Table 1){suffix}."
    PAPER_CONFIG[name] = config
    return register_model(build)


vgg11 = _builder("vgg11", "A", False)
vgg11_bn = _builder("vgg11_bn", "A", True)
vgg11_lrn = _builder("vgg11_lrn", "A-LRN", False)
vgg11_lrn_bn = _builder("vgg11_lrn_bn", "A-LRN", True)
vgg13 = _builder("vgg13", "B", False)
vgg13_bn = _builder("vgg13_bn", "B", True)
vgg16_c = _builder("vgg16_c", "C", False)
vgg16_c_bn = _builder("vgg16_c_bn", "C", True)
vgg16 = _builder("vgg16", "D", False)
vgg16_bn = _builder("vgg16_bn", "D", True)
vgg19 = _builder("vgg19", "E", False)
vgg19_bn = _builder("vgg19_bn", "E", True)

# airbench94's design choices beside its configuration S: GELU, pooling before batch norm,
# fixed batch-norm scales with fast statistics (PyTorch momentum 0.4 = airbench's 0.6), a
# global max pool and a linear layer whose logits are scaled by 1/9, identity-initialised
# convolutions. Every one of them can be overridden like any builder option.
SPEED_DEFAULTS = dict(head="linear", activation="gelu", pool_before_norm=True, bn_momentum=0.4,
                      bn_weight=False, head_pool="max", logit_scale=1 / 9, init="dirac")


def vgg_speed(**options) -> VGG:
    """Configuration S (not in the paper): airbench94's compact VGG for 32x32 images, with
    batch normalisation and a whitening first layer (set it with ``init_whitening``)."""
    defaults = dict(SPEED_DEFAULTS)
    if options.get("head", "linear") != "linear":  # the paper's heads pool by averaging
        del defaults["head_pool"], defaults["logit_scale"]
    return VGG(CONFIGS["S"], name="vgg_speed", batch_norm=True, **{**defaults, **options})


register_model(vgg_speed)
