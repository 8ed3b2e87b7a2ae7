"""Mixup and CutMix: the blend matches its targets, draws are reproducible per step, and runs
with them train, resume exactly and reject bad alphas."""

import pytest
import torch

from vggnet.errors import ConfigError
from vggnet.training.config import resolve
from vggnet.training.loop import count_correct
from vggnet.training.mixing import BatchMixer

from helpers import run_stopped_and_resumed

DIGITS = dict(data="digits", model="vgg11_bn", width=0.25, head="linear", batch_size=64,
              lr=0.05, crop_padding=2, flip=False, progress=False)


def _batch(n=16, classes=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 12, 12, generator=g), torch.arange(n) % classes


def _blend_partners(mixed, x):
    """For each mixed image: the partner j and weight lam with mixed = lam x_i + (1 - lam) x_j."""
    found = []
    for i in range(len(x)):
        if torch.allclose(mixed[i], x[i], atol=1e-5):
            found.append((i, 1.0))  # its own partner, or lam = 1
            continue
        for j in range(len(x)):
            d = (x[i] - x[j]).flatten()
            lam = float(((mixed[i] - x[j]).flatten() @ d) / (d @ d)) if j != i else 0.0
            if j != i and torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j], atol=1e-4):
                found.append((j, lam))
                break
        else:
            raise AssertionError(f"image {i} is not a blend of itself and one other image")
    return found


def _expected_target(y, i, j, lam, classes=5):
    one_hot = torch.nn.functional.one_hot(y, classes).float()
    return lam * one_hot[i] + (1 - lam) * one_hot[j]


def test_mixup_blends_images_with_one_weight_as_its_targets_say():
    x, y = _batch()
    mixed, target = BatchMixer(5, mixup=0.4, seed=3)(x, y, epoch=2, step=7)
    partners = _blend_partners(mixed, x)
    lams = {round(lam, 4) for _, lam in partners if lam != 1.0}
    assert len(lams) == 1, lams  # one weight per batch
    for i, (j, lam) in enumerate(partners):
        assert torch.allclose(target[i], _expected_target(y, i, j, lam), atol=1e-4)


def test_cutmix_pastes_one_box_whose_area_is_the_partners_share():
    x, y = _batch()
    mixed, target = BatchMixer(5, cutmix=1.0, seed=1)(x, y, epoch=0, step=4)
    box = (mixed != x).any(1).any(0)  # H x W: pixels any image took from its partner
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert len(rows) and box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    own = 1 - float(box.sum()) / box.numel()
    for i in range(len(x)):
        assert torch.equal(mixed[i][:, ~box], x[i][:, ~box])
        j = next(k for k in range(len(x)) if torch.equal(mixed[i][:, box], x[k][:, box]))
        lam = 1.0 if j == i else own
        assert torch.allclose(target[i], _expected_target(y, i, j, lam), atol=1e-6)


def test_draws_depend_on_seed_epoch_and_step_only():
    x, y = _batch()
    mixer = BatchMixer(5, mixup=0.2, cutmix=1.0, seed=0)
    a, ta = mixer(x, y, 1, 5)
    b, tb = mixer(x, y, 1, 5)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    c, _ = mixer(x, y, 1, 6)
    assert not torch.equal(a, c)


def test_training_with_mixup_and_cutmix_learns_and_resumes_exactly(tmp_path):
    run_stopped_and_resumed(dict(DIGITS, epochs=3, mixup=0.2, cutmix=1.0, deterministic=True),
                            tmp_path, stop_after=1)  # asserts top-1 > 0.8 too


@pytest.mark.parametrize("key", ["mixup", "cutmix"])
def test_negative_alpha_is_a_clear_error(tmp_path, key):
    with pytest.raises(ConfigError, match="Beta alphas"):
        resolve(None, {**DIGITS, key: -0.1, "out": str(tmp_path / "run")})


def test_training_accuracy_scores_a_prediction_by_its_share_of_the_blend():
    x, y = _batch()
    mixed, target = BatchMixer(5, mixup=0.4, seed=3)(x, y, epoch=2, step=7)
    lam = next(lam for _, lam in _blend_partners(mixed, x) if lam != 1.0)
    dominant = target.argmax(1)  # the class that most of each blended image shows
    partner = target.clone()
    partner[torch.arange(len(y)), y] = -1  # the other class where the blend has two
    partner = torch.where(target.max(1).values == 1, y, partner.argmax(1))
    as_logits = lambda classes: torch.nn.functional.one_hot(classes, 5).float()  # noqa: E731
    n = len(y)
    # Unmixed targets: a plain count.
    assert count_correct(as_logits(y), y) == n
    # Blended targets: the own class counts lam, the partner's 1 - lam; both classes in sum.
    two = target.max(1).values < 1
    own = float(count_correct(as_logits(y), target))
    other = float(count_correct(as_logits(partner), target))
    assert own == pytest.approx(n - int(two.sum()) * (1 - lam), abs=1e-4)
    assert own + other == pytest.approx(n + int((~two).sum()), abs=1e-4)
    assert float(count_correct(as_logits(dominant), target)) >= max(own, other) - 1e-4
