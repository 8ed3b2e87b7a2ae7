"""3x3 convolutions by Winograd's minimal filtering, F(2x2, 3x3), for the small feature maps.

VGG's last blocks run 3x3 convolutions on 8x8, 4x4 and 2x2 maps (CIFAR) where oneDNN's direct
bf16 convolution, forward and above all backward, is far from the CPU's peak, while a batched
matrix product of the same size is near it. Winograd's algorithm (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2015) turns each 2x2 block of outputs into 16
independent products over the channels: one batched matmul of 16 (tiles x C) @ (C x K) matrices,
2.25x fewer multiplications than direct convolution, between cheap transforms of the input
(additions only), of the weights (G w G^T) and of the output (additions only). The backward pass
is the adjoint: two more batched matmuls in the transformed domain, and transposed transforms.

Everything works on channels-last (NHWC) data, which is what the engine trains with, so no
layout change is needed between layers. ``convert_to_winograd`` swaps the eligible ``nn.Conv2d``
of a model for ``WinogradConv2d``, which shares the parameters (state dicts are unchanged) and
decides per call, by rules measured on a 2-core AVX512-BF16 CPU: Winograd for bf16 training
steps of layers with >= 256 input channels on maps of <= 8x8 (even sides), where forward plus
backward measured faster than oneDNN's (per-layer figures: benchmarks/winograd_layers.py, and
the whole training step: benchmarks/RESULTS.md); the ordinary convolution otherwise, since
with fewer channels or in a forward pass alone the transforms cost more than the products save,
and in fp32 the batched matmul is itself the slower one. Always the ordinary one while
tracing, scripting, exporting or compiling.

The price is accuracy per product, not per model: in bf16 the transformed values are rounded
to bf16 too, so each layer's output is somewhat further from the exact convolution than the
direct bf16 convolution's (tests/test_winograd.py bounds it); the quick CIFAR-10 recipe trains
with it to the same accuracy as without (docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import cpu_has_amx

__all__ = ["winograd_conv3x3", "WinogradConv2d", "convert_to_winograd", "winograd_eligible"]

# F(2x2, 3x3): y = A^T [ (G w G^T) * (B^T d B) ] A on 4x4 input tiles d with stride 2
_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_G2 = torch.kron(_G, _G)  # (16, 9): transformed tap a*4+b from kernel tap i*3+j
_BIAS_SLOT = 5  # (a, b) = (1, 1): A^T's column 1 is all ones, so M[1, 1] reaches every output


def weight_transform(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, C, 3, 3) -> (16, K, C): G w G^T for every (output, input) channel pair, computed in
    ``dtype`` (default: the weight's) from the weight cast to it. Differentiable."""
    return _WeightTransform.apply(weight, dtype or weight.dtype)


class _WeightTransform(torch.autograd.Function):
    """U = G w G^T as one matrix product on the weight already cast to the compute dtype (the
    cast an autocast convolution makes anyway), on the weight's own layout (contiguous or
    channels-last) without copying it; the backward pass is the same product transposed, its
    result cast back to the weight's dtype and layout. For a 512 x 512 layer in bf16 on the
    2-core AVX512-BF16 CPU, forward plus backward went from 11.4 ms (an fp32 product, a cast,
    autograd's copies) to under 3 ms; over VGG-16's eight Winograd layers that was a sixth of
    a CIFAR-10 training step."""

    @staticmethod
    def forward(ctx, weight, dtype):
        k, c = weight.shape[:2]
        g = _G2.to(device=weight.device, dtype=dtype)
        w = weight.to(dtype)
        ctx.g, ctx.weight_dtype = g, weight.dtype
        ctx.channels_last = _channels_last(weight)
        if ctx.channels_last:  # memory (K, 3, 3, C): a batch of (9 x C) matrices, one per k
            return torch.matmul(g, w.permute(0, 2, 3, 1).reshape(k, 9, c)).transpose(0, 1) \
                .contiguous()
        return torch.mm(g, w.reshape(k * c, 9).t()).view(16, k, c)

    @staticmethod
    def backward(ctx, du):
        g = ctx.g
        k, c = du.shape[1:]
        du = du.to(g.dtype)
        if ctx.channels_last:
            dw = torch.matmul(g.t(), du.transpose(0, 1)).view(k, 3, 3, c).permute(0, 3, 1, 2)
        else:
            dw = torch.mm(du.reshape(16, k * c).t(), g).view(k, c, 3, 3)
        return dw.to(ctx.weight_dtype), None


def _channels_last(w: torch.Tensor) -> bool:
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def _input_transform(x: torch.Tensor) -> torch.Tensor:
    """NHWC (N, H, W, C), H and W even -> V (16, tiles, C) = B^T d B of every 4x4 tile of the
    zero-padded input, rows then columns, each 1-D stage four additions of strided views."""
    n, h, w, c = x.shape
    th, tw = h // 2, w // 2
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))
    even, odd = xp[:, 0::2], xp[:, 1::2]  # tile t covers rows 2t..2t+3 = even[t], odd[t], ...
    rows = torch.empty(4, n, th, w + 2, c, dtype=x.dtype, device=x.device)
    torch.sub(even[:, :-1], even[:, 1:], out=rows[0])
    torch.add(odd[:, :-1], even[:, 1:], out=rows[1])
    torch.sub(even[:, 1:], odd[:, :-1], out=rows[2])
    torch.sub(odd[:, :-1], odd[:, 1:], out=rows[3])
    even, odd = rows[:, :, :, 0::2], rows[:, :, :, 1::2]
    v = torch.empty(4, 4, n, th, tw, c, dtype=x.dtype, device=x.device)
    torch.sub(even[..., :-1, :], even[..., 1:, :], out=v[:, 0])
    torch.add(odd[..., :-1, :], even[..., 1:, :], out=v[:, 1])
    torch.sub(even[..., 1:, :], odd[..., :-1, :], out=v[:, 2])
    torch.sub(odd[..., :-1, :], odd[..., 1:, :], out=v[:, 3])
    return v.view(16, n * th * tw, c)


def _output_transform(m: torch.Tensor, n: int, th: int, tw: int) -> torch.Tensor:
    """M (16, tiles, K) -> NHWC output (N, 2th, 2tw, K) = A^T M A per tile."""
    k = m.shape[-1]
    m = m.view(4, 4, n, th, tw, k)
    s = torch.empty(2, 4, n, th, tw, k, dtype=m.dtype, device=m.device)
    torch.add(m[0], m[1], out=s[0]).add_(m[2])
    torch.sub(m[1], m[2], out=s[1]).sub_(m[3])
    y = torch.empty(n, th, 2, tw, 2, k, dtype=m.dtype, device=m.device)
    y0 = y[:, :, :, :, 0].permute(2, 0, 1, 3, 4)  # (2, N, th, tw, K), output row i first
    y1 = y[:, :, :, :, 1].permute(2, 0, 1, 3, 4)
    torch.add(s[:, 0], s[:, 1], out=y0).add_(s[:, 2])
    torch.sub(s[:, 1], s[:, 2], out=y1).sub_(s[:, 3])
    return y.view(n, 2 * th, 2 * tw, k)


def _output_transform_adjoint(dy: torch.Tensor) -> torch.Tensor:
    """NHWC gradient (N, H, W, K) -> dM (16, tiles, K) = A dY A^T per tile."""
    n, h, w, k = dy.shape
    th, tw = h // 2, w // 2
    d = dy.view(n, th, 2, tw, 2, k)
    d0, d1 = d[:, :, 0], d[:, :, 1]
    t = torch.empty(4, n, th, tw, 2, k, dtype=dy.dtype, device=dy.device)
    t[0].copy_(d0)
    torch.add(d0, d1, out=t[1])
    torch.sub(d0, d1, out=t[2])
    torch.neg(d1, out=t[3])
    dm = torch.empty(4, 4, n, th, tw, k, dtype=dy.dtype, device=dy.device)
    t0, t1 = t[..., 0, :], t[..., 1, :]
    dm[:, 0].copy_(t0)
    torch.add(t0, t1, out=dm[:, 1])
    torch.sub(t0, t1, out=dm[:, 2])
    torch.neg(t1, out=dm[:, 3])
    return dm.view(16, n * th * tw, k)


def _stage_adjoint(v0, v1, v2, v3, out: torch.Tensor, dim: int) -> None:
    """Adjoint of one 1-D stage of the input transform, written for the interior positions
    only (the padding's gradient is never needed). The v* have the tile axis at ``dim``; ``out``
    has it there too, followed by a pair axis: (padded position 2t+1, padded position 2t+2).
    Tile t's four positions 2t..2t+3 get (v0, v1-v2+v3, v1+v2-v0, -v3); neighbours overlap by
    two, hence the shifted terms."""
    first, second = out.select(dim + 1, 0), out.select(dim + 1, 1)
    inner = v0.shape[dim] - 1
    torch.sub(v1, v2, out=first).add_(v3)
    first.narrow(dim, 1, inner).sub_(v3.narrow(dim, 0, inner))
    torch.add(v1, v2, out=second).sub_(v0)
    second.narrow(dim, 0, inner).add_(v0.narrow(dim, 1, inner))


def _input_transform_adjoint(dv: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """dV (16, tiles, C) -> NHWC input gradient (N, H, W, C): columns, then rows."""
    c = dv.shape[-1]
    th, tw = h // 2, w // 2
    dv = dv.view(4, 4, n, th, tw, c)
    rows = torch.empty(4, n, th, tw, 2, c, dtype=dv.dtype, device=dv.device)
    _stage_adjoint(dv[:, 0], dv[:, 1], dv[:, 2], dv[:, 3], rows, 3)
    rows = rows.view(4, n, th, w, c)
    dx = torch.empty(n, th, 2, w, c, dtype=dv.dtype, device=dv.device)
    _stage_adjoint(rows[0], rows[1], rows[2], rows[3], dx, 1)
    return dx.view(n, h, w, c)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    x = x.permute(0, 2, 3, 1)
    return x if x.is_contiguous() else x.contiguous()


class _Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, u, bias):
        n, c, h, w = x.shape
        v = _input_transform(_nhwc(x))
        m = torch.bmm(v, u.transpose(1, 2))
        if bias is not None:
            m[_BIAS_SLOT].add_(bias)
        ctx.save_for_backward(v, u)
        ctx.shape = (n, c, h, w)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _output_transform(m, n, h // 2, w // 2).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        v, u = ctx.saved_tensors
        n, c, h, w = ctx.shape
        dm = _output_transform_adjoint(_nhwc(grad))
        dx = du = dbias = None
        if ctx.needs_input_grad[0]:
            dx = _input_transform_adjoint(torch.bmm(dm, u), n, h, w).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            du = torch.bmm(dm.transpose(1, 2), v)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            acc = torch.promote_types(dm.dtype, torch.float32)  # bf16 sums in fp32
            dbias = dm[_BIAS_SLOT].sum(0, dtype=acc).to(ctx.bias_dtype)
        return dx, du, dbias


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a (K, C, 3, 3) weight and an input of even
    height and width, by F(2x2, 3x3). Computed in ``dtype`` (default: the input's); the output
    is channels-last. The weight transform is computed in ``dtype`` too, from the weight cast
    to it, as an autocast convolution casts its weight."""
    if weight.shape[-2:] != (3, 3) or x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"winograd_conv3x3 takes (N, C, H, W) input and a (K, C, 3, 3) weight; "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"winograd_conv3x3 needs even height and width, got {tuple(x.shape[-2:])}")
    dtype = dtype or x.dtype
    with torch.autocast(x.device.type, enabled=False):
        return _Winograd.apply(x.to(dtype), weight_transform(weight, dtype), bias)


def winograd_eligible(conv: nn.Module) -> bool:
    """A plain 3x3 convolution with stride 1, padding 1, no dilation or groups."""
    return (type(conv) in (nn.Conv2d, WinogradConv2d) and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros")


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1) that runs by Winograd's F(2x2, 3x3) when
    the call qualifies, and as the ordinary convolution otherwise. Same parameters, same state
    dict. A call qualifies when the map has even sides and at most ``max_pixels`` pixels, the
    layer has at least ``min_channels`` input channels, the compute dtype (the autocast dtype
    if autocast is on, else the input's) is one of ``dtypes`` (None: any), and, with
    ``backward_only``, a backward pass will follow (grad mode on, something to differentiate)."""

    max_pixels: int = 64
    min_channels: int = 256
    dtypes: tuple | None = (torch.bfloat16,)
    backward_only: bool = True

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        kind = x.device.type
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype

    def _use_winograd(self, x: torch.Tensor) -> bool:
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return False
        if self.backward_only and not (torch.is_grad_enabled()
                                       and (x.requires_grad or self.weight.requires_grad)):
            return False
        h, w = x.shape[-2:]
        return (x.dim() == 4 and h % 2 == 0 and w % 2 == 0 and h * w <= self.max_pixels
                and self.in_channels >= self.min_channels
                and (self.dtypes is None or self._compute_dtype(x) in self.dtypes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_winograd(x):
            return super().forward(x)
        return winograd_conv3x3(x, self.weight, self.bias, dtype=self._compute_dtype(x))

    def extra_repr(self) -> str:
        dtypes = "any" if self.dtypes is None else ", ".join(str(d).replace("torch.", "")
                                                             for d in self.dtypes)
        when = " with backward" if self.backward_only else ""
        return (super().extra_repr() + f", winograd=F(2x2,3x3) on maps <= {self.max_pixels} "
                f"pixels, >= {self.min_channels} channels, in {dtypes}{when}")


def _as_type(conv: nn.Conv2d, cls: type) -> nn.Conv2d:
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
              padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
              bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta")
    new.weight, new.bias = conv.weight, conv.bias  # shared, not copied
    new.train(conv.training)
    return new


# The largest map (in pixels) on which a bf16 training step (forward and backward) of a
# 3x3 layer with >= 256 input channels ran faster by Winograd than by oneDNN's direct
# convolution, per kind of CPU (benchmarks/winograd_layers.py, 2 cores, batch 128). With AMX,
# oneDNN's direct convolutions run on the tile units and win on 8x8 maps (Winograd 0.57-0.74x,
# Xeon); they lose below (Winograd 1.9-4.2x on 4x4 and 2x2 maps). Without AMX (AVX512-BF16,
# EPYC) Winograd already won on 8x8 maps with 256 channels (1.21x).
AUTO_MAX_PIXELS = {"amx": 16, "avx512_bf16": 64}


def auto_max_pixels() -> int:
    """``max_pixels`` of :func:`convert_to_winograd` for this CPU (``conv_algorithm = auto``)."""
    return AUTO_MAX_PIXELS["amx" if cpu_has_amx() else "avx512_bf16"]


def convert_to_winograd(model: nn.Module, max_pixels: int = 64, min_channels: int = 256,
                        dtypes: tuple | None = (torch.bfloat16,),
                        backward_only: bool = True) -> int:
    """Swap, in place, every eligible ``nn.Conv2d`` of ``model`` for a ``WinogradConv2d`` that
    shares its parameters (so optimizers, state dicts and checkpoints are unaffected), and
    return how many were swapped (layers with fewer than ``min_channels`` input channels are
    left alone). Their weights are stored contiguous (not channels-last), the layout the
    weight transform reads without copying. The defaults are where it measured faster on a 2-core
    AVX512-BF16 CPU: bf16 training steps (forward and backward) of layers with 256 or more
    input channels on maps of 8x8 or less. With fewer channels, or forward passes alone, the
    transforms cost more than the products save. See ``WinogradConv2d`` for each option."""
    if max_pixels < 4:
        raise ValueError(f"max_pixels must be at least 4 (a 2x2 map), got {max_pixels}")
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if winograd_eligible(child) and (child.in_channels >= min_channels
                                             or isinstance(child, WinogradConv2d)):
                new = child if isinstance(child, WinogradConv2d) else _as_type(child,
                                                                               WinogradConv2d)
                new.max_pixels, new.min_channels = max_pixels, min_channels
                new.dtypes, new.backward_only = dtypes, backward_only
                if _channels_last(new.weight):
                    # the weight transform reads (K, C, 9) rows in one product; a channels-last
                    # weight (the model moved to channels-last) would need a batched product
                    # and a transposing copy, forward and backward: 11% of a VGG-16-BN bf16
                    # CIFAR step, measured. The same Parameter, so optimizers are unaffected.
                    new.weight.data = new.weight.data.contiguous()
                setattr(parent, name, new)
                swapped += 1
    return swapped
