"""Tricks of the fast-CIFAR literature, as training options: an exponential moving average of
the weights (``ema``), Lookahead (``lookahead``) and alternating flip (``alternate_flip``)."""

import pytest
import torch
import torch.nn as nn

from vggnet.data import load_splits
from vggnet.data.augment import alternating_flip_mask, alternating_flip_parity
from vggnet.data.loader import TensorLoader
from vggnet.run import load_checkpoint
from vggnet.errors import ConfigError
from vggnet.training.config import resolve
from vggnet.training.averaging import Lookahead, build_ema
from vggnet.training.loop import train

from helpers import run_stopped_and_resumed

DIGITS = dict(data="digits", model="vgg11_bn", width=0.125, head="linear", batch_size=64,
              lr=0.05, crop_padding=2, flip=False, progress=False, deterministic=True)


def test_alternating_flip_sees_every_image_both_ways_every_two_epochs():
    idx = torch.randperm(1000)
    parity = alternating_flip_parity(1000, seed=3)
    e0, e1, e2 = (alternating_flip_mask(parity, idx, e) for e in range(3))
    assert torch.equal(e0, ~e1) and torch.equal(e0, e2)
    assert 400 < int(e0.sum()) < 600  # a random half in the first epoch
    assert torch.equal(parity, alternating_flip_parity(1000, seed=3))  # seeded ...
    assert not torch.equal(parity, alternating_flip_parity(1000, seed=4))  # ... by the seed


def test_loader_alternate_flip_flips_each_image_in_exactly_one_of_two_epochs():
    train_set, _ = load_splits("digits")
    data = train_set.subset(64)
    loader = TensorLoader(data, 64, mean=[0.5], std=[0.5], train=True, flip=True,
                          alternate_flip=True, shuffle_seed=1)
    views = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        x, y = next(iter(loader.batches()))
        order = loader.sampler.order()
        views.append(x[torch.argsort(order)])  # back in data-set order
    original = (data.images.float() / 255 - 0.5) / 0.5
    flipped = [torch.isclose(v, original.flip(3)).flatten(1).all(1) for v in views]
    same = [torch.isclose(v, original).flatten(1).all(1) for v in views]
    symmetric = same[0] & flipped[0]  # images equal to their mirror image (none, in practice)
    assert torch.equal((flipped[0] ^ flipped[1]) | symmetric, torch.ones(64, dtype=torch.bool))
    assert torch.equal(same[0] | flipped[0], torch.ones(64, dtype=torch.bool))


def test_ema_averages_weights_and_batch_norm_statistics():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = build_ema(model, decay=0.9)
    history = []
    for step in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked += 1
        ema.update_parameters(model)
        history.append({k: v.clone() for k, v in model.state_dict().items()})
    # reference: first update copies, then decay min(0.9, (1 + n) / (10 + n)) for n averaged
    expected = {k: v.clone().float() for k, v in history[0].items()}
    for n, state in enumerate(history[1:], start=1):
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in state.items():
            expected[k] = v.float() if k.endswith("num_batches_tracked") else d * expected[k] + (1 - d) * v
    got = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].float(), v, atol=1e-5), k
    assert int(got["1.num_batches_tracked"]) == 30


def test_training_with_ema_saves_the_averaged_weights_and_resumes_exactly(tmp_path):
    cfg = dict(DIGITS, epochs=3, ema=0.9, alternate_flip=True, flip=True)
    full, a = run_stopped_and_resumed(cfg, tmp_path, stop_after=1)
    # the saved weights are the average, not the last step's: they differ from a run without
    raw = train(resolve(None, {**cfg, "ema": 0.0, "out": str(tmp_path / "c")}))
    c, _ = load_checkpoint(tmp_path / "c", which="last")
    assert not torch.equal(a.state_dict()["features.conv1_1.weight"], c.state_dict()["features.conv1_1.weight"])
    assert raw.history[-1]["train_loss"] == full.history[-1]["train_loss"]  # same steps
    # resuming with ema a run trained without it is refused, with the way out
    with pytest.raises(ValueError, match="trained without ema; resume it with --ema 0"):
        train(resolve(None, {**cfg, "out": str(tmp_path / "c"), "resume": True, "epochs": 4}))


def test_lookahead_pulls_the_weights_back_every_k_steps():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    model[2].weight.requires_grad_(False)  # frozen: not part of the lookahead
    frozen = model[2].weight.detach().clone()
    start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    la = Lookahead(model, k=3, alpha=0.25)
    synced = []
    for step in range(1, 7):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(1.0)  # the inner optimizer's step
            model[1].running_mean.add_(1.0)
        synced.append(la.step())
        if step == 3:  # slow = start + 0.25 * 3, and the fast weights restart from it
            for p, s0 in zip((p for p in model.parameters() if p.requires_grad), start):
                assert torch.allclose(p, s0 + 0.75)
    assert synced == [False, False, True, False, False, True]
    for p, s0 in zip((p for p in model.parameters() if p.requires_grad), start):
        assert torch.allclose(p, s0 + 1.5)  # 0.75 + 0.25 * 3
    assert torch.equal(model[2].weight, frozen)
    assert torch.equal(model[1].running_mean, torch.full((2,), 6.0))  # buffers: not averaged
    restored = Lookahead(model, k=3, alpha=0.25)
    restored.load_state_dict(la.state_dict())
    assert restored.steps == 6 and all(torch.equal(a, b) for a, b in zip(restored.slow, la.slow))


def test_training_with_lookahead_resumes_exactly_and_changes_the_training(tmp_path):
    cfg = dict(DIGITS, epochs=3, lookahead=5, lookahead_alpha=0.5)
    full, _ = run_stopped_and_resumed(cfg, tmp_path, stop_after=2)
    plain = train(resolve(None, {**cfg, "lookahead": 0, "out": str(tmp_path / "c")}))
    assert plain.history[0]["train_loss"] != full.history[0]["train_loss"]
    with pytest.raises(ValueError, match="trained without it; resume it with --lookahead 0"):
        train(resolve(None, {**cfg, "out": str(tmp_path / "c"), "resume": True, "epochs": 4}))


@pytest.mark.parametrize("bad, message", [
    (dict(lookahead=-1), "lookahead is a number of steps"),
    (dict(lookahead=5, lookahead_alpha=0.0), "lookahead_alpha must be in"),
    (dict(lookahead=5, lookahead_alpha=1.5), "lookahead_alpha must be in"),
    (dict(ema=1.0), "ema is a decay per step in"),
    (dict(ema=-0.1), "ema is a decay per step in"),
    (dict(alternate_flip=True, flip=False), "alternate_flip needs flip true"),
])
def test_speed_options_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        resolve(None, {**DIGITS, **bad})
