"""Per-layer summary: output shape, parameters, multiply-accumulates, receptive field."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: tuple
    params: int
    macs: int
    rf: int | None  # receptive field in input pixels; None once pooling is global
    stride: int | None


@dataclass
class ModelSummary:
    arch: str
    input_size: tuple
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r}")

    def __str__(self) -> str:
        head = f"{'layer':<11} {'type':<18} {'output':<18} {'params':>13} {'MACs':>16} {'RF':>5} {'stride':>6}"
        lines = [f"{self.arch}  input {'x'.join(map(str, self.input_size))}", head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(map(str, r.shape))
            rf = "-" if r.rf is None else str(r.rf)
            st = "-" if r.stride is None else str(r.stride)
            lines.append(f"{r.name:<11} {r.kind:<18} {shape:<18} {r.params:>13,} {r.macs:>16,} {rf:>5} {st:>6}")
        lines.append("-" * len(head))
        lines.append(f"total parameters: {self.total_params:,} ({self.trainable_params:,} trainable)")
        lines.append(f"total MACs: {self.total_macs:,} ({self.total_macs / 1e9:.3f} G multiply-adds)")
        return "\n".join(lines)


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return int(out[0].numel() * (module.in_channels // module.groups) * kh * kw)
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def summarize(model: nn.Module, input_size=224, in_channels: int | None = None) -> ModelSummary:
    """Run one image of ``input_size`` (int or (H, W)) through ``model`` and tabulate each layer.

    MACs count convolutions and fully connected layers, as the published figures do.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    c = in_channels or model.model_config["in_channels"]
    summary = ModelSummary(arch=model.arch, input_size=(c, h, w))
    rf, jump = 1, 1
    layers = [("features", n, m) for n, m in model.features.named_children()] + \
             [("head", n, m) for n, m in model.head.named_children()]
    param = next(model.parameters())
    x = torch.zeros(1, c, h, w, dtype=param.dtype, device=param.device)
    if hasattr(model, "check_input"):  # the layers run one by one below, past the model's check
        model.check_input(x)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for scope, name, module in layers:
            before = tuple(x.shape)
            x = module(x)
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
                k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
                s = module.stride if isinstance(module.stride, int) else module.stride[0]
                if rf is not None:
                    rf, jump = rf + (k - 1) * jump, jump * s
            elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.Flatten)) or (
                    module.__class__.__name__ == "SpatialMean") or (
                    module.__class__.__name__ == "MinSizePool" and tuple(x.shape) != before):
                rf = jump = None  # every output now sees the whole image
            summary.rows.append(LayerRow(
                name=name, kind=module.__class__.__name__, shape=tuple(x.shape[1:]),
                params=sum(p.numel() for p in module.parameters(recurse=True)),
                macs=_macs(module, x), rf=rf, stride=jump))
    model.train(was_training)
    summary.total_params = sum(p.numel() for p in model.parameters())
    summary.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary.total_macs = sum(r.macs for r in summary.rows)
    return summary
