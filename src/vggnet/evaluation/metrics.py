"""Top-1/top-5, per-class accuracy and the confusion matrix, accumulated on the device."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift images by (dy, dx) pixels, filling the uncovered border by reflection."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_probs(model, x: torch.Tensor, *, flip: bool = False, shift: int = 0) -> torch.Tensor:
    """Softmax averaged over test-time views: the image, its mirror (``flip``) and, with
    ``shift``, copies translated by (+shift, +shift) and (-shift, -shift) pixels."""
    views = [x]
    if shift:
        views += [translate(x, shift, shift), translate(x, -shift, -shift)]
    if flip:
        views += [v.flip(3) for v in views]
    return sum(model(v).float().softmax(1) for v in views) / len(views)


@torch.inference_mode()
def predict_log_probs(model, loader, *, autocast=contextlib.nullcontext, tta: bool = False,
                   tta_shift: int = 0):
    """Log-probabilities for every batch of ``loader`` (and the labels), on the device.

    With ``tta``, the softmax outputs of the image and its horizontal mirror are averaged
    (the paper's flip augmentation at test time); ``tta_shift`` adds translated views.
    """
    outs, labels = [], []
    for x, y in loader:
        with autocast():
            p = tta_probs(model, x, flip=tta, shift=tta_shift)
        outs.append(p.clamp_min(1e-12).log())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def classification_metrics(log_probs: torch.Tensor, labels: torch.Tensor,
                           num_classes: int) -> dict:
    """Loss, top-1, top-5, per-class accuracy and the confusion matrix (rows: true class)."""
    n = len(labels)
    k = min(5, num_classes)
    topk = log_probs.topk(k, dim=1).indices
    correct1 = (topk[:, 0] == labels)
    correct5 = (topk == labels[:, None]).any(1)
    confusion = torch.bincount(labels * num_classes + topk[:, 0],
                               minlength=num_classes ** 2).reshape(num_classes, num_classes)
    per_class_total = confusion.sum(1).clamp_min(1)
    per_class = (confusion.diag().float() / per_class_total).tolist()
    return {
        "n": n,
        "loss": F.nll_loss(log_probs, labels).item(),
        "top1": correct1.float().mean().item(),
        "top5": correct5.float().mean().item(),
        "per_class": per_class,
        "confusion": confusion.cpu().tolist(),
    }


def evaluate(model, loader, num_classes: int, *, autocast=contextlib.nullcontext,
             tta: bool = False, tta_shift: int = 0) -> dict:
    was_training = model.training
    model.eval()
    log_probs, labels = predict_log_probs(model, loader, autocast=autocast, tta=tta,
                                       tta_shift=tta_shift)
    model.train(was_training)
    return classification_metrics(log_probs, labels, num_classes)
