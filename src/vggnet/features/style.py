"""Neural style transfer (Gatys, Ecker and Bethge, CVPR 2016) on any VGG by paper layer names.

The image is optimised so that its features at the content layer (relu4_2) match the
content image's and its Gram matrices at the style layers (relu1_1 ... relu5_1) match the
style image's (several styles blend their Gram matrices by weight). Only the layers up to the
deepest one used are run, max pooling can be replaced by average pooling (as the paper
prefers), and the whole thing can run coarse to fine: solved at a small size first, the result
upsampled as the start of the next size. With ``preserve_colors`` the result keeps the content
image's colours (Gatys et al. 2016, "Preserving color in neural artistic style transfer":
luminance from the result, chrominance from the content).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..models.normalization import InputNorm, input_norm
from .perceptual import gram

GATYS_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
GATYS_CONTENT = "relu4_2"
OPTIMIZERS = ("lbfgs", "adam")
POOLING = ("max", "avg")


@dataclass
class StyleOptions:
    """What to optimise and how. Weights follow the PyTorch tutorial's scale (content 1,
    style 1e6 on Gram matrices divided by C*H*W), so its users find familiar settings."""
    content_layer: str = GATYS_CONTENT
    style_layers: dict[str, float] = field(
        default_factory=lambda: {name: 1.0 / len(GATYS_STYLE) for name in GATYS_STYLE})
    content_weight: float = 1.0
    style_weight: float = 1e6
    tv_weight: float = 0.0            # total variation: smooths high-frequency noise
    steps: int = 300                  # loss evaluations per scale (L-BFGS counts each one)
    optimizer: str = "lbfgs"
    lr: float = 0.02                  # Adam's step, in [0, 1] pixel units
    pooling: str = "avg"
    init: str = "content"             # content, or noise
    precision: str = "auto"           # fp32, bf16, auto (bf16 on a GPU or a CPU with native bf16)
    fp32_steps: int = 0               # with bf16: the last loss evaluations of each scale in fp32
    preserve_colors: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not "
                              f"{self.optimizer!r}")
        if self.pooling not in POOLING:
            raise ConfigError(f"pooling must be max or avg, not {self.pooling!r}")
        if self.init not in ("content", "noise"):
            raise ConfigError(f"init must be content or noise, not {self.init!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, not {self.steps}")
        if not 0 <= self.fp32_steps <= self.steps:
            raise ConfigError(f"fp32_steps must be between 0 and steps ({self.steps}), not "
                              f"{self.fp32_steps}")
        if not self.style_layers:
            raise ConfigError("name at least one style layer")
        for name, value in (("content_weight", self.content_weight),
                            ("style_weight", self.style_weight), ("tv_weight", self.tv_weight)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, not {value}")
        if self.content_weight == self.style_weight == 0:
            raise ConfigError("content_weight and style_weight are both 0: nothing to optimise")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr (Adam's step) must be a finite number > 0, not {self.lr}")


class FeatureNet(nn.Module):
    """The backbone's feature layers up to the deepest tap, frozen, returning the taps.

    A tap on a convolution is its output before the ReLU (the ReLU after it runs out of
    place); other ReLUs run in place. ``pooling="avg"`` swaps max pooling for average
    pooling of the same size, as Gatys et al. do."""

    def __init__(self, backbone: nn.Module, taps, pooling: str = "max",
                 norm: InputNorm | None = None, bf16: bool = False):
        super().__init__()
        names = [n for n, _ in backbone.features.named_children()]
        unknown = [t for t in taps if t not in names]
        if unknown:
            raise ConfigError(f"unknown layer(s) {unknown} for {getattr(backbone, 'arch', 'this model')}; "
                              f"valid: {', '.join(names)}")
        self.taps = list(dict.fromkeys(taps))
        last = max(names.index(t) for t in self.taps)
        layers = copy.deepcopy(nn.Sequential(*list(backbone.features.children())[: last + 1]))
        for i, (name, m) in enumerate(zip(names, layers)):
            if isinstance(m, nn.MaxPool2d) and pooling == "avg":
                layers[i] = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode)
            elif isinstance(m, nn.ReLU):
                m.inplace = names[i - 1] not in self.taps
        self.names = names[: last + 1]
        # channels-last pays with bf16 (8% per step at 224 px on an AMX CPU, and tensor cores
        # want it); in fp32 the CPU's NCHW kernels measured 8% faster: benchmarks/RESULTS.md
        self.memory_format = torch.channels_last if bf16 else torch.contiguous_format
        self.layers = layers.eval().requires_grad_(False).to(memory_format=self.memory_format)
        self.norm = norm or input_norm(None, backbone)
        self.bf16 = bf16

    @contextlib.contextmanager
    def in_fp32(self, fp32: bool = True):
        """Run in fp32 inside the block (when ``fp32``), whatever ``bf16`` says; restored after."""
        bf16 = self.bf16
        self.bf16 = bf16 and not fp32
        try:
            yield self
        finally:
            self.bf16 = bf16

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB images in [0, 1] -> {tap: activation} (float32; with ``bf16`` the layers run
        under bf16 autocast, which pays on GPUs and CPUs with native bf16)."""
        x = self.norm(x).contiguous(memory_format=self.memory_format)
        out = {}
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for name, layer in zip(self.names, self.layers):
                x = layer(x)
                if name in self.taps:
                    out[name] = x.float()
        return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + \
        (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class StyleLoss(nn.Module):
    """Gatys's loss of an image (N=1, RGB in [0, 1]) against fixed content and style targets."""

    def __init__(self, net: FeatureNet, opts: StyleOptions, content: torch.Tensor,
                 styles: list[torch.Tensor], blend: list[float]):
        super().__init__()
        self.net, self.opts = net, opts
        # the targets in fp32: bf16 only where the image is optimised
        with torch.no_grad(), net.in_fp32():
            self.content_target = net(content)[opts.content_layer].detach()
            total = sum(blend)
            self.grams = {name: 0.0 for name in opts.style_layers}
            for style, w in zip(styles, blend):
                feats = net(style)
                for name in opts.style_layers:
                    self.grams[name] = self.grams[name] + (w / total) * gram(feats[name])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.opts
        feats = self.net(x)
        content = F.mse_loss(feats[o.content_layer], self.content_target)
        style = sum(w * F.mse_loss(gram(feats[n]), self.grams[n])
                    for n, w in o.style_layers.items())
        loss = o.content_weight * content + o.style_weight * style
        if o.tv_weight:
            loss = loss + o.tv_weight * total_variation(x)
        return loss, {"content": float(content.detach()), "style": float(style.detach())}


def _optimise(loss_fn: StyleLoss, x: torch.Tensor, opts: StyleOptions, progress=None):
    """Minimise ``loss_fn`` over the pixels of ``x`` for ``opts.steps`` loss evaluations,
    keeping them in [0, 1]. Returns the image of the lowest loss seen (L-BFGS can step off a
    good point late in a run, more so with bf16's noisier gradients) and its loss terms, with
    the last evaluation's loss as ``last_loss``."""
    x = x.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    state = {"n": 0, "best": None, "best_x": None, "last": None}
    fp32_from = opts.steps - opts.fp32_steps

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad(set_to_none=True)
        # the last fp32_steps evaluations in fp32: bf16's rounding no longer limits the result
        with loss_fn.net.in_fp32(state["n"] >= fp32_from):
            loss, terms = loss_fn(x)
        loss.backward()
        state["n"] += 1
        value = float(loss.detach())
        state["last"] = value
        if state["best"] is None or value < state["best"]["loss"]:
            state["best"] = {"loss": value, **terms}
            state["best_x"] = x.detach().clone()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{value:.4g}", refresh=False)
        return loss

    if opts.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=opts.steps, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0)
        while state["n"] < opts.steps:  # L-BFGS may stop early on a flat loss; go on
            before = state["n"]
            opt.step(closure)
            if state["n"] == before:
                break
    else:
        opt = torch.optim.Adam([x], lr=opts.lr)
        for _ in range(opts.steps):
            opt.step(closure)
    return state["best_x"], {**state["best"], "last_loss": state["last"]}


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def preserve_colors(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The result's luminance with the content's chrominance (YIQ), in [0, 1]."""
    m = _YIQ.to(result)
    yiq_r = torch.einsum("ij,njhw->nihw", m, result)
    yiq_c = torch.einsum("ij,njhw->nihw", m, content)
    mixed = torch.cat([yiq_r[:, :1], yiq_c[:, 1:]], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), mixed).clamp(0, 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def scale_sizes(height: int, width: int, sizes) -> list[tuple[int, int]]:
    """(h, w) for each longer-side size, keeping the aspect ratio, smallest first."""
    out = []
    for s in sorted(set(int(v) for v in sizes)):
        f = s / max(height, width)
        out.append((max(16, round(height * f)), max(16, round(width * f))))
    return out


def stylize(backbone: nn.Module, content: torch.Tensor, styles, *, blend=None, sizes=None,
            style_scale: float = 1.0, opts: StyleOptions | None = None,
            norm: str | InputNorm | None = None, progress: bool = False):
    """Style transfer of ``content`` (1 x 3 x H x W RGB in [0, 1]) to ``styles`` (a tensor
    or a list of them, any sizes), blended by ``blend`` weights (equal by default).

    ``sizes``: the longer side at each scale, coarse to fine (default: the content's own);
    ``style_scale``: each style image's longer side relative to the result's. Returns
    (result 1 x 3 x h x w, {"loss", "content", "style"} at the end)."""
    opts = opts or StyleOptions()
    opts.check()
    styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
    blend = list(blend) if blend is not None else [1.0] * len(styles)
    for name, t in [("content", content), *[(f"style {i + 1}", s) for i, s in enumerate(styles)]]:
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise InputError(f"{name}: expected a 1 x 3 x H x W RGB tensor, got {tuple(t.shape)}")
    if len(blend) != len(styles) or any(w < 0 for w in blend) or sum(blend) <= 0:
        raise ConfigError(f"give one non-negative blend weight per style image ({len(styles)}), "
                          f"not all zero; got {blend}")
    from ..device import uses_bf16

    net = FeatureNet(backbone, [opts.content_layer, *opts.style_layers], opts.pooling,
                     input_norm(norm, backbone), uses_bf16(content.device, opts.precision))
    h, w = content.shape[-2:]
    plan = scale_sizes(h, w, sizes or [max(h, w)])
    g = torch.Generator().manual_seed(opts.seed)
    x = content if opts.init == "content" else torch.rand(content.shape, generator=g)
    bar = _progress(len(plan) * opts.steps) if progress else None
    terms: dict[str, float] = {}
    try:
        for size in plan:
            c = _resize(content, size)
            s_imgs = [_style_at(s, size, style_scale) for s in styles]
            loss_fn = StyleLoss(net, opts, c, s_imgs, blend)
            x, terms = _optimise(loss_fn, _resize(x, size), opts, bar)
    finally:
        if bar is not None:
            bar.close()
    if opts.preserve_colors:
        x = preserve_colors(x, _resize(content, x.shape[-2:]))
    return x, terms


def _style_at(style: torch.Tensor, size: tuple[int, int], scale: float) -> torch.Tensor:
    """The style image with its longer side ``scale`` times the result's longer side."""
    h, w = style.shape[-2:]
    f = scale * max(size) / max(h, w)
    return _resize(style, (max(16, round(h * f)), max(16, round(w * f))))


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="stylize", unit="step", disable=None, leave=False,
                mininterval=0.5)



# --- image files ----------------------------------------------------------------------------

def load_image(path, max_side: int | None = None) -> torch.Tensor:
    """An image file as a 1 x 3 x H x W RGB tensor in [0, 1], its longer side at most
    ``max_side``. A large JPEG is decoded at a reduced scale (never whole), then resized."""
    import numpy as np
    from PIL import Image

    from ..io import open_image

    im = open_image(path, draft=max_side)  # JPEG: shorter side still >= max_side
    if max_side and max(im.size) > max_side:
        f = max_side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))),
                       Image.BICUBIC, reducing_gap=3.0)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


def to_pil(x: torch.Tensor):
    from PIL import Image

    arr = (x[0].clamp(0, 1).permute(1, 2, 0) * 255).round().byte().cpu().numpy()
    return Image.fromarray(arr, "RGB")


def sheet(images, height: int = 256, gap: int = 4):
    """Pictures side by side at one height (content, styles, result), on white."""
    from PIL import Image

    scaled = [im.resize((max(1, round(im.size[0] * height / im.size[1])), height),
                        Image.BICUBIC) for im in images]
    out = Image.new("RGB", (sum(im.size[0] for im in scaled) + gap * (len(scaled) - 1), height),
                    (255, 255, 255))
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.size[0] + gap
    return out
