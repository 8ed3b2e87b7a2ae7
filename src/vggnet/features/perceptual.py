"""Perceptual distances on VGG features, as ``nn.Module``s for anyone's training loop.

:class:`LPIPS` computes the learned perceptual metric of Zhang et al. (2018), version 0.1 on
VGG-16: its five ReLU outputs (relu1_2 ... relu5_3), each unit-normalised over channels,
squared differences weighted by the ``lpips`` package's calibrated 1x1 layers, averaged over
space and summed. The calibration is read from the installed ``lpips`` package or a file you
name; it is never copied into vggnet.

:class:`VGGPerceptualLoss` is the plain feature loss of super-resolution and style work:
chosen layers by paper name (``conv5_4`` is before its ReLU, as ESRGAN uses it; ``relu5_4``
after), an L1 or L2 feature term and an optional Gram-matrix (style) term, with presets of
the published recipes.

Both check the range of their inputs at call time: feeding [0, 1] images where [-1, 1] is
expected (or the reverse) is a silent, common bug elsewhere.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError, WeightsError
from ..models.normalization import InputNorm, input_norm

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
# LPIPS v0.1's input scaling: ImageNet's mean and std, carried to [-1, 1] inputs
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

PRESETS = {
    # Johnson et al. 2016, fast style transfer / perceptual loss, VGG-16 after ReLU
    "johnson": dict(arch="vgg16", features={"relu2_2": 1.0},
                    styles={"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
                    criterion="l2"),
    # ESRGAN (Wang et al. 2018): VGG-19 conv5_4 before its activation, L1
    "esrgan": dict(arch="vgg19", features={"conv5_4": 1.0}, styles={}, criterion="l1"),
    # Real-ESRGAN's five weighted layers, before activation, L1
    "real_esrgan": dict(arch="vgg19", features={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0,
                                                "conv4_4": 1.0, "conv5_4": 1.0},
                        styles={}, criterion="l1"),
    # Gatys et al. 2016: style relu1_1..relu5_1 (Gram), content relu4_2, VGG-19
    "gatys": dict(arch="vgg19", features={"relu4_2": 1.0},
                  styles={"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2,
                          "relu5_1": 0.2}, criterion="l2"),
}


def _check_range(x: torch.Tensor, low: float, name: str, hint: str) -> None:
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))  # one pass, outside autograd
    if lo < low - 1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{name}: values from {lo:.3g} to {hi:.3g}, outside the expected "
                         f"[{low:g}, 1]; {hint}")


def lpips_linear_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """LPIPS v0.1's calibrated 1x1 weights for VGG: from ``path``, else from the installed
    ``lpips`` package (``lpips/weights/v0.1/vgg.pth``). Read without unpickling objects."""
    if path is None:
        spec = importlib.util.find_spec("lpips")
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError("LPIPS needs its calibrated layers: pip install lpips (vggnet "
                               "reads lpips/weights/v0.1/vgg.pth from it), or pass "
                               "linear_weights=PATH to that file")
        path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"LPIPS calibration file not found: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return {f"lin{k}": sd[f"lin{k}.model.1.weight"] for k in range(len(LPIPS_LAYERS))}
    except KeyError as exc:
        raise WeightsError(f"{path} is not LPIPS v0.1's VGG calibration (no {exc.args[0]})") \
            from None


def load_backbone(backbone, arch: str) -> nn.Module:
    """A frozen VGG from a model, "imagenet" (published weights, downloaded once and
    checked), a vggnet run folder or checkpoint (its own architecture and input statistics),
    or a weights file in torchvision, timm or vggnet format (``arch``)."""
    from ..models import create_model

    if backbone is None:
        backbone = "imagenet"
    if isinstance(backbone, (str, Path)):
        if str(backbone) != "imagenet" and _is_run(Path(backbone)):
            from ..run import load_checkpoint

            backbone = load_checkpoint(backbone)[0]
        else:
            backbone = create_model(arch, weights=str(backbone))
    backbone = backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


def _is_run(path: Path) -> bool:
    """A vggnet run folder, or a checkpoint file that carries run metadata."""
    if path.is_dir():
        return True
    if not path.is_file():
        return False
    from ..run import read_run_metadata

    try:
        read_run_metadata(path)
        return True
    except WeightsError:  # a plain weights file (torchvision, timm)
        return False


class LPIPS(nn.Module):
    """LPIPS distance (v0.1, VGG-16). ``forward(a, b)`` returns N x 1 x 1 x 1 like the
    ``lpips`` package. Inputs are RGB in [-1, 1] (``input_range="[-1,1]"``, LPIPS's own
    convention) or [0, 1] (``input_range="[0,1]"``); values outside the declared range are
    refused, and [0, 1]-looking pairs under the [-1, 1] convention draw a warning.

    ``backbone``: a vggnet ``vgg16`` model or a weights file for one (torchvision, timm or
    vggnet format); default: torchvision's published ImageNet weights, which LPIPS was
    calibrated on (any other backbone gives a distance, not LPIPS)."""

    def __init__(self, backbone=None, linear_weights: str | Path | None = None,
                 input_range: str = "[-1,1]"):
        super().__init__()
        if input_range not in ("[-1,1]", "[0,1]"):
            raise ConfigError(f"input_range must be '[-1,1]' or '[0,1]', not {input_range!r}")
        self.input_range = input_range
        self.backbone = load_backbone(backbone, "vgg16")
        if getattr(self.backbone, "arch", "vgg16") != "vgg16":
            raise ConfigError(f"LPIPS is defined on VGG-16 (configuration D without batch "
                              f"norm), not {self.backbone.arch}")
        lins = lpips_linear_weights(linear_weights)
        self.lins = nn.ParameterList([nn.Parameter(lins[f"lin{k}"], requires_grad=False)
                                      for k in range(len(LPIPS_LAYERS))])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self._warned = False

    def _prepare(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"{name}: expected N x 3 x H x W RGB images, got {tuple(x.shape)}")
        if self.input_range == "[0,1]":
            _check_range(x, 0.0, name, "these look like [-1, 1] images: use "
                                       "input_range='[-1,1]'")
            x = 2 * x - 1
        else:
            _check_range(x, -1.0, name, "scale them to [-1, 1] (2 * x - 1 for [0, 1] images, "
                                        "x / 127.5 - 1 for 0-255) or declare input_range")
        return (x - self.shift) / self.scale

    def forward(self, a: torch.Tensor, b: torch.Tensor, per_layer: bool = False):
        xa, xb = self._prepare(a, "first input"), self._prepare(b, "second input")
        if (self.input_range == "[-1,1]" and not self._warned and float(a.min()) >= 0
                and float(b.min()) >= 0):
            self._warned = True
            warnings.warn("LPIPS inputs have no negative value: if they are [0, 1] images, "
                          "the distance is wrong; pass input_range='[0,1]' (or scale them "
                          "to [-1, 1])", stacklevel=2)
        fa = self.backbone.extract(xa, LPIPS_LAYERS)
        fb = self.backbone.extract(xb, LPIPS_LAYERS)
        layers = []
        for lin, name in zip(self.lins, LPIPS_LAYERS):
            na = fa[name] / (fa[name].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb[name] / (fb[name].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            layers.append(F.conv2d((na - nb) ** 2, lin).mean((2, 3), keepdim=True))
        total = sum(layers)
        return (total, layers) if per_layer else total


class _Gram(torch.autograd.Function):
    """F F^T / k with a backward of one product, (G' + G'^T) F / k: autograd's own takes two
    (one per factor) and adds two feature-sized tensors, about 9% of a style-transfer step."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, k: float) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.k = k
        return torch.bmm(f, f.transpose(1, 2)).div_(k)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (f,) = ctx.saved_tensors
        g = g.to(f.dtype)  # under autocast the forward product may have been bf16
        return torch.bmm((g + g.transpose(1, 2)).div_(ctx.k), f), None


def gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix of N x C x H x W features, divided by C * H * W."""
    n, c, h, w = x.shape
    return _Gram.apply(x.reshape(n, c, h * w), float(c * h * w))


class VGGPerceptualLoss(nn.Module):
    """Feature (and Gram) loss on a frozen VGG. Inputs: RGB in [0, 1], normalised here the
    way the backbone expects (its ``input_norm``: range, channel order, mean and std; or
    ``norm``, a preset name such as "caffe" or an :class:`InputNorm`). ``features`` / ``styles``: {layer: weight};
    ``preset``: one of :data:`PRESETS` ("johnson", "esrgan", "real_esrgan", "gatys")."""

    def __init__(self, backbone=None, *, preset: str | None = None,
                 features: dict[str, float] | None = None,
                 styles: dict[str, float] | None = None, criterion: str | None = None,
                 arch: str | None = None, norm: str | InputNorm | None = None):
        super().__init__()
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset {preset!r}: {', '.join(PRESETS)}")
            p = PRESETS[preset]
            features = p["features"] if features is None else features
            styles = p["styles"] if styles is None else styles
            criterion, arch = criterion or p["criterion"], arch or p["arch"]
        self.features, self.styles = dict(features or {}), dict(styles or {})
        if not self.features and not self.styles:
            raise ConfigError("name at least one feature or style layer, or a preset")
        self.criterion = criterion or "l1"
        if self.criterion not in ("l1", "l2"):
            raise ConfigError(f"criterion must be 'l1' or 'l2', not {self.criterion!r}")
        self.backbone = load_backbone(backbone, arch or "vgg19")
        valid = self.backbone.tap_names()
        bad = [n for n in {**self.features, **self.styles} if n not in valid]
        if bad:
            raise ConfigError(f"unknown layer(s) {bad} for {self.backbone.arch}; valid: "
                              f"{', '.join(valid)}")
        self.layers = list(dict.fromkeys([*self.features, *self.styles]))
        self.norm = input_norm(norm, self.backbone)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(a, b) if self.criterion == "l1" else F.mse_loss(a, b)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        for t, name in ((x, "input"), (target, "target")):
            _check_range(t, 0.0, name, "VGGPerceptualLoss takes [0, 1] RGB images ((x + 1) / 2 "
                                       "for [-1, 1] ones)")
        fx = self.backbone.extract(self.norm(x), self.layers)
        with torch.no_grad():
            ft = self.backbone.extract(self.norm(target), self.layers)
        loss = x.new_zeros(())
        for name, w in self.features.items():
            loss = loss + w * self._distance(fx[name], ft[name])
        for name, w in self.styles.items():
            loss = loss + w * self._distance(gram(fx[name]), gram(ft[name]))
        return loss
