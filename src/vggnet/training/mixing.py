"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on whole training batches.

Each batch is mixed with a permutation of itself: mixup blends the two images with a weight
lam ~ Beta(alpha, alpha); CutMix pastes a box of the partner covering 1 - lam of the area
(lam then recomputed from the box as clipped at the border). The targets become the same blend
of the two one-hot labels, which ``nn.CrossEntropyLoss`` takes as class probabilities (label
smoothing applies on top). With both on, each batch uses one of them with equal chance.

The draws depend only on (seed, epoch, step), so a resumed run mixes exactly as an unbroken
one, with no generator state to save.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class BatchMixer:
    def __init__(self, num_classes: int, *, mixup: float = 0.0, cutmix: float = 0.0,
                 seed: int = 0):
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix are Beta alphas >= 0; got {mixup}, {cutmix}")
        self.num_classes, self.mixup, self.cutmix, self.seed = num_classes, mixup, cutmix, seed

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int):
        """(mixed images, target probabilities N x classes) for batch ``step`` of ``epoch``."""
        rng = np.random.default_rng((self.seed, epoch, step))
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))
        perm = torch.from_numpy(rng.permutation(len(y))).to(x.device)
        if use_cutmix:
            x, lam = _paste_box(x, perm, lam, rng)
        else:
            x = x.lerp(x[perm], 1 - lam)  # lam * x + (1 - lam) * partner
        one_hot = F.one_hot(y, self.num_classes).float()
        return x, one_hot.lerp(one_hot[perm], 1 - lam)


def _paste_box(x: torch.Tensor, perm: torch.Tensor, lam: float, rng: np.random.Generator):
    """CutMix: a box of about (1 - lam) of the image, at a uniform centre, from the partner."""
    h, w = x.shape[-2:]
    cut = np.sqrt(1 - lam)
    cy, cx = rng.integers(h), rng.integers(w)
    y0, y1 = np.clip([cy - int(h * cut) // 2, cy + int(h * cut) // 2], 0, h)
    x0, x1 = np.clip([cx - int(w * cut) // 2, cx + int(w * cut) // 2], 0, w)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, 1 - (y1 - y0) * (x1 - x0) / (h * w)
