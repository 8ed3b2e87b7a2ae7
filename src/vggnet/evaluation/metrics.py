"""Top-1/top-5, per-class accuracy and the confusion matrix, accumulated on the device."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@torch.inference_mode()
def predict_logits(model, loader, *, autocast=contextlib.nullcontext, tta: bool = False):
    """Log-probabilities for every batch of ``loader`` (and the labels), on the device.

    With ``tta``, the softmax outputs of the image and its horizontal mirror are averaged
    (the paper's flip augmentation at test time).
    """
    outs, labels = [], []
    for x, y in loader:
        with autocast():
            p = model(x).float().softmax(1)
            if tta:
                p = (p + model(x.flip(3)).float().softmax(1)) / 2
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
             tta: bool = False) -> dict:
    was_training = model.training
    model.eval()
    log_probs, labels = predict_logits(model, loader, autocast=autocast, tta=tta)
    model.train(was_training)
    return classification_metrics(log_probs, labels, num_classes)
