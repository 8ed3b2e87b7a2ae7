"""Where a training step's time goes: ``vggnet train``'s own loop under ``torch.profiler``,
its operators' own (self) CPU time summed into the parts of a VGG step (oneDNN convolutions,
Winograd products, Winograd transforms, batch norm, ReLU, pooling, optimizer, ...).

The throughput figures of ``training_speed`` say how fast the step is against a baseline; this
says which part to work on, on the CPU at hand: the same code is memory-bound in one part on
one CPU and compute-bound on another. Shares are of the profiled time (the profiler adds a
little to every operator); images/s are timed separately, without the profiler.
"""

from __future__ import annotations

import statistics

import torch

# The parts, each named by the operators whose time it takes. Scopes come first: an operator
# called by a Winograd layer's autograd Function, or by the optimizer, belongs to that part
# whatever it is (the weight transform's product is an ``aten::mm``, like the linear head's);
# otherwise an operator belongs to the first part found walking up from it through its
# callers, and one that none claims is "other".
_WINOGRAD = {"_Winograd", "_WinogradBackward"}
SCOPES = {
    "winograd weight transform": {"_WeightTransform", "_WeightTransformBackward"},
    "winograd transforms": _WINOGRAD,  # element-wise; its products are split out below
    "optimizer": {"Optimizer.step", "Optimizer.zero_grad"},
}
OPERATORS = {
    "convolution (oneDNN)": {"aten::mkldnn_convolution", "aten::convolution_backward",
                             "aten::convolution", "aten::_convolution"},
    "batch norm": {"aten::native_batch_norm", "aten::native_batch_norm_backward",
                   "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_functional"},
    "relu": {"aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_",
             "aten::threshold_backward"},
    "max pooling": {"aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"},
    "linear head and loss": {"aten::linear", "aten::addmm", "aten::mm", "aten::cross_entropy_loss",
                             "aten::log_softmax", "aten::_log_softmax_backward_data",
                             "aten::nll_loss_forward", "aten::nll_loss_backward"},
    "optimizer": {"aten::_fused_sgd_", "torch::autograd::AccumulateGrad"},
    "weight casts (autocast)": {"aten::_to_copy"},
}


def _base_name(name: str) -> str:
    return name.split("#", 1)[0]  # "Optimizer.step#SGD.step" -> "Optimizer.step"


def _callers(event):
    node = event
    while node is not None:
        yield _base_name(node.name)
        node = node.cpu_parent


def part_of(event) -> str:
    """The part of the step an operator's own time belongs to (:data:`SCOPES`, then
    :data:`OPERATORS`)."""
    names = list(_callers(event))
    for name in names:
        for part, scope in SCOPES.items():
            if name in scope:
                if part == "winograd transforms" and names[0] == "aten::bmm":
                    return "winograd products"
                return part
    for name in names:
        for part, operators in OPERATORS.items():
            if name in operators:
                return part
    return "other"


def split_by_part(events, steps: int) -> dict:
    """{part: ms per step} of the events' own CPU time, largest first."""
    total: dict[str, float] = {}
    for e in events:
        if e.self_cpu_time_total:
            part = part_of(e)
            total[part] = total.get(part, 0.0) + e.self_cpu_time_total / 1e3 / steps
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def profile_training_step(train_set, mean, std, batch: int = 128, steps: int = 5,
                          warmup: int = 3, precision: str = "auto", repeats: int = 3,
                          max_pixels: int | None = None) -> dict:
    """Profile ``steps`` steps of the engine's loop (``training_speed.build_engine_loop``)
    after ``warmup``, and time ``repeats`` runs of as many steps without the profiler."""
    from torch.profiler import ProfilerActivity, profile

    from ..device import resolve_precision
    from ..training.loop import train_one_epoch
    from .training_speed import build_engine_loop

    precision = resolve_precision("cpu", precision)
    state, step, loader = build_engine_loop(train_set, mean, std, batch, precision,
                                            max_pixels=max_pixels)
    train_one_epoch(state, step, loader, limit=warmup)
    rates = []
    for _ in range(repeats):
        sums = train_one_epoch(state, step, loader, limit=steps)
        rates.append(sums.images / sums.seconds)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch(state, step, loader, limit=steps)
    parts = split_by_part(prof.events(), steps)
    profiled = sum(parts.values())
    winograd = sorted({m.max_pixels for m in state.model.modules() if hasattr(m, "max_pixels")})
    return {"model": "vgg16_bn (linear head), CIFAR-10 32x32", "batch": batch, "steps": steps,
            "precision": precision, "winograd_max_pixels": winograd or None,
            "images_per_s": round(statistics.median(rates), 1),
            "step_ms": round(1e3 * batch / statistics.median(rates), 1),
            "profiled_step_ms": round(profiled, 1),
            "parts_ms": {k: round(v, 1) for k, v in parts.items()},
            "parts_share": {k: round(v / profiled, 3) for k, v in parts.items()}}


def profile_table(row: dict) -> list[str]:
    """The parts as Markdown rows, largest first."""
    lines = ["| part of the step | ms per step | share |", "|---|---|---|"]
    for part, ms in row["parts_ms"].items():
        lines.append(f"| {part} | {ms} | {100 * row['parts_share'][part]:.1f}% |")
    return lines
