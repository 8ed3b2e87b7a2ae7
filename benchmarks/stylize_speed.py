"""Style transfer per step: vggnet's ``stylize`` against a baseline written the way the PyTorch
tutorial ("Neural Transfer Using PyTorch") does it, in one run, on the same images, weights,
losses and number of steps.

    python benchmarks/stylize_speed.py --out benchmarks/results/stylize_speed.json

The baseline copies torchvision's VGG-19 features into an ``nn.Sequential`` with a
normalisation module first, out-of-place ReLUs, and content and style loss modules inserted
after the chosen layers (trimmed after the last one), the model frozen, and L-BFGS over the
pixels with the tutorial's closure (clamp, forward, sum of the losses, backward). Both use
Gatys's layers (style relu1_1..relu5_1 at 1/5 each, content relu4_2), max pooling, content
weight 1 and style weight 1e6, and take exactly ``--steps`` loss evaluations in one L-BFGS
call (the tutorial's loop of 20-evaluation calls re-evaluates once per call; the work per
evaluation is the same). Reported: seconds per step (median of ``--repeats`` interleaved
runs), their ratio, and the final losses and their relative difference (goal: within 1%):
each side's own last loss, and both results scored by one yardstick, the tutorial's loss in
fp32 (so that a bf16 run is judged by its image, not by its own rounded loss).
``--fp32-steps N`` runs vggnet's last N evaluations in fp32 after bf16 ones.
L-BFGS magnifies any difference in rounding (a different order of the same sums, or bf16):
after about ten evaluations two exact implementations part by a few per cent, so
``--optimizer adam`` runs both sides under Adam (the tutorial's closure, one evaluation per
step), whose losses stay comparable over many steps.
Random weights unless ``--weights`` names a VGG-19 file (the time does not depend on them; the
loss values do). Images: a real photograph and a real painting-like texture when given,
otherwise two Imagenette photos from ``--data``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT = "relu4_2"


# --- the baseline, as the tutorial writes it ----------------------------------------------

def gram_matrix(x):
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class ContentLoss(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target.detach()

    def forward(self, x):
        self.loss = F.mse_loss(x, self.target)
        return x


class StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super().__init__()
        self.target = gram_matrix(target_feature).detach()

    def forward(self, x):
        self.loss = F.mse_loss(gram_matrix(x), self.target)
        return x


class Normalization(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, img):
        return (img - self.mean) / self.std


def tutorial_model(cnn, content_img, style_img):
    """The tutorial's get_style_model_and_losses, naming layers as the paper does (its own
    conv_1, conv_2, ... count convolutions, so its 'conv_4' is conv2_2)."""
    model = nn.Sequential(Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    model.to(content_img.device)
    content_losses, style_losses = [], []
    block, conv = 1, 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            conv += 1
            name = f"conv{block}_{conv}"
        elif isinstance(layer, nn.ReLU):
            name, layer = f"relu{block}_{conv}", nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool{block}"
            block, conv = block + 1, 0
        else:
            raise RuntimeError(f"unrecognised layer {layer}")
        model.add_module(name, layer)
        if name == CONTENT:
            loss = ContentLoss(model(content_img).detach())
            model.add_module(f"content_loss_{name}", loss)
            content_losses.append(loss)
        if name in STYLE:
            loss = StyleLoss(model(style_img).detach())
            model.add_module(f"style_loss_{name}", loss)
            style_losses.append(loss)
    last = max(i for i, m in enumerate(model) if isinstance(m, (ContentLoss, StyleLoss)))
    return model[: last + 1], style_losses, content_losses


def tutorial_run(cnn, content_img, style_img, steps, style_weight=1e6, content_weight=1.0,
                 optimizer="lbfgs", lr=0.02):
    model, style_losses, content_losses = tutorial_model(cnn, content_img, style_img)
    input_img = content_img.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    if optimizer == "adam":  # the tutorial's closure under Adam: one evaluation per step
        opt = torch.optim.Adam([input_img], lr=lr)
    else:
        opt = torch.optim.LBFGS([input_img], max_iter=steps, tolerance_grad=0.0,
                                tolerance_change=0.0)
    run = [0]
    last = {}

    def closure():
        with torch.no_grad():
            input_img.clamp_(0, 1)
        opt.zero_grad()
        model(input_img)
        style_score = sum(sl.loss for sl in style_losses) / len(style_losses)
        content_score = sum(cl.loss for cl in content_losses)
        loss = style_weight * style_score + content_weight * content_score
        loss.backward()
        run[0] += 1
        last["loss"] = float(loss.detach())
        return loss

    for _ in range(steps if optimizer == "adam" else 1):
        opt.step(closure)
    return last["loss"], run[0], input_img.detach().clamp(0, 1)


def tutorial_loss(cnn, content_img, style_img, img, style_weight, content_weight) -> float:
    """The yardstick: the tutorial's loss of an image, in fp32."""
    model, style_losses, content_losses = tutorial_model(cnn, content_img, style_img)
    with torch.no_grad():
        model(img)
    style_score = sum(sl.loss for sl in style_losses) / len(style_losses)
    content_score = sum(cl.loss for cl in content_losses)
    return float(style_weight * style_score + content_weight * content_score)


# --- the measurement ---------------------------------------------------------------------

def load_pair(args):
    from vggnet.features.style import load_image

    if args.content and args.style:
        return load_image(args.content, args.size), load_image(args.style, args.size)
    import tarfile

    picks = {}
    with tarfile.open(Path(args.data) / "imagenette-224.tar.gz") as tf:
        for m in tf:
            for key, wnid in (("content", "n03028079"), ("style", "n03888257")):
                if key not in picks and f"/val/{wnid}/" in m.name:
                    picks[key] = tf.extractfile(m).read()
            if len(picks) == 2:
                break
    return tuple(load_image_bytes(picks[k], args.size) for k in ("content", "style"))


def load_image_bytes(data: bytes, size: int):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(data)
        f.flush()
        from vggnet.features.style import load_image

        return load_image(f.name, size)


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="longer side (the tutorial's CPU size)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", help="a VGG-19 weights file (default: random, seeded)")
    ap.add_argument("--style-weight", type=float, help="default: 1e6 with --weights (the "
                    "tutorial's), 1e9 with random weights, whose small features would leave "
                    "L-BFGS's curvature test unmet and the image unchanged")
    ap.add_argument("--content-weight", type=float, help="default: 1, or 1e3 with random weights")
    ap.add_argument("--content")
    ap.add_argument("--style")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="vggnet's precision (the baseline is fp32, as the tutorial's)")
    ap.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"],
                    help="both sides' optimizer (Adam's path does not depend on L-BFGS's "
                    "sensitivity to rounding, so its losses compare over many steps)")
    ap.add_argument("--lr", type=float, default=0.02, help="Adam's step (pixels in [0, 1])")
    ap.add_argument("--fp32-steps", type=int, default=0,
                    help="with bf16: vggnet's last N evaluations in fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    return ap.parse_args()


def main() -> None:
    import torchvision

    from vggnet.bench import environment
    from vggnet.features.style import StyleOptions, stylize
    from vggnet.models import create_model, load_weights, to_torchvision_state_dict

    args = _args()

    torch.manual_seed(0)
    ours_model = create_model("vgg19")
    if args.weights:
        load_weights(ours_model, args.weights)
    tv = torchvision.models.vgg19()
    tv.load_state_dict(to_torchvision_state_dict(ours_model))  # the same weights in both
    cnn = tv.features.eval()
    content, style = load_pair(args)
    sw = args.style_weight or (1e6 if args.weights else 1e9)
    cw = args.content_weight or (1.0 if args.weights else 1e3)
    opts = StyleOptions(steps=args.steps, pooling="max", precision=args.precision,
                        style_weight=sw, content_weight=cw, optimizer=args.optimizer,
                        lr=args.lr, fp32_steps=args.fp32_steps)
    device = torch.device(args.device)
    ours_model, cnn = ours_model.to(device), cnn.to(device)
    content, style = content.to(device), style.to(device)
    contenders = {
        "tutorial": lambda: tutorial_run(cnn, content, style, args.steps, sw, cw,
                                         args.optimizer, args.lr),
        "vggnet": lambda: _ours(stylize, ours_model, content, style, opts),
    }
    times = {k: [] for k in contenders}
    losses, images = {}, {}
    _, start = stylize(ours_model, content, style, opts=StyleOptions(
        steps=1, pooling="max", style_weight=sw, content_weight=cw))
    for _ in range(args.repeats):
        for k, f in contenders.items():
            t0 = time.perf_counter()
            losses[k], n, images[k] = f()
            times[k].append((time.perf_counter() - t0) / n)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"environment": environment(), "size": list(content.shape[-2:]),
              "steps": args.steps, "repeats": args.repeats, "precision": args.precision,
              "optimizer": args.optimizer,
              "weights": args.weights or "random (seed 0)", "style_weight": sw,
              "content_weight": cw,
              "seconds_per_step": {k: round(v, 4) for k, v in med.items()},
              "speedup": round(med["tutorial"] / med["vggnet"], 2),
              "start_loss": float(f"{start['loss']:.6g}"),
              "final_loss": {k: float(f"{v:.6g}") for k, v in losses.items()},
              "loss_difference": round(abs(losses["vggnet"] - losses["tutorial"])
                                       / abs(losses["tutorial"]), 5)}
    judged = {k: tutorial_loss(cnn, content, style, v, sw, cw) for k, v in images.items()}
    result.update({"fp32_steps": args.fp32_steps,
                   "final_loss_fp32_yardstick": {k: float(f"{v:.6g}") for k, v in judged.items()},
                   "loss_difference_fp32_yardstick": round(
                       abs(judged["vggnet"] - judged["tutorial"]) / abs(judged["tutorial"]), 5)})
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _ours(stylize, model, content, style, opts):
    image, terms = stylize(model, content, style, opts=opts)
    return terms["last_loss"], opts.steps, image  # the last evaluation's, as the tutorial reports


if __name__ == "__main__":
    main()
