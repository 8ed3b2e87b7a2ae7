"""The recipe hooks on their own: a frozen backbone keeps its batch-norm statistics until it
is unfrozen, then only what the freeze stopped trains again; a whitening layer is set from
the data unless weights came with the model, and its bias trains only in its first epochs
and never while the backbone is frozen."""

import logging
from types import SimpleNamespace

import torch
import torch.nn as nn

from vggnet.training.hooks import FrozenFeatures, Hook, Whitening, recipe_hooks


def _cfg(**kw):
    base = dict(whiten_bias_epochs=3, weights=None, init_from=None, freeze="none",
                unfreeze_after=None)
    return SimpleNamespace(**{**base, **kw})


class Net(nn.Module):
    """A backbone with a whitening layer, a batch norm with a learned scale and one built
    without (kept fixed by design), as vgg_speed has."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("whiten", nn.Conv2d(3, 4, 2))
        self.features.add_module("bn", nn.BatchNorm2d(4))
        self.features.add_module("fixed_bn", nn.BatchNorm2d(4))
        self.features.fixed_bn.weight.requires_grad_(False)
        self.features.whiten.weight.requires_grad_(False)
        self.head = nn.Linear(4, 2)
        self.has_whitening = True
        self.whitened_with = None

    def init_whitening(self, sample):
        self.whitened_with = sample


def _frozen(net):
    from vggnet.training.setup import freeze_backbone

    net.frozen_backbone = freeze_backbone(net)
    return net.frozen_backbone


def test_the_base_hook_does_nothing():
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    Hook().on_train_start(net, None, False)
    Hook().on_epoch_start(net, 0)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_a_frozen_backbone_keeps_its_statistics_until_unfrozen(caplog):
    net = Net()
    frozen = _frozen(net)
    assert {id(p) for p in frozen} == {id(p) for p in (
        net.features.whiten.bias, net.features.bn.weight, net.features.bn.bias,
        net.features.fixed_bn.bias)}
    hook = FrozenFeatures(unfreeze_after=2)
    with caplog.at_level(logging.INFO, logger="vggnet"):
        for epoch in (0, 1):
            net.train()
            hook.on_epoch_start(net, epoch)
            assert not net.features.training and net.head.training
            assert not any(p.requires_grad for p in net.features.parameters())
        assert caplog.text == ""
        net.train()
        hook.on_epoch_start(net, 2)
    assert net.features.training  # batch norm learns again
    assert all(p.requires_grad for p in frozen)
    # what the model keeps fixed by design stays fixed
    assert not net.features.whiten.weight.requires_grad
    assert not net.features.fixed_bn.weight.requires_grad
    assert "epoch 3: the backbone is unfrozen" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vggnet"):
        hook.on_epoch_start(net, 3)  # already unfrozen: said once
    assert caplog.text == ""


def test_a_backbone_frozen_for_good_stays_frozen():
    net = Net()
    _frozen(net)
    hook = FrozenFeatures()
    for epoch in range(5):
        net.train()
        hook.on_epoch_start(net, epoch)
        assert not net.features.training
    assert not any(p.requires_grad for p in net.features.parameters())


def test_the_whitening_layer_is_set_from_the_data_unless_weights_came_with_it():
    data = SimpleNamespace(whitening_sample=lambda: "patches")
    net = Net()
    Whitening(_cfg()).on_train_start(net, data, resumed=False)
    assert net.whitened_with == "patches"
    for cfg, resumed in ((_cfg(weights="run"), False), (_cfg(init_from="a.safetensors"), False),
                         (_cfg(), True)):
        net = Net()
        Whitening(cfg).on_train_start(net, data, resumed)
        assert net.whitened_with is None


def _bias_trains(hook, epochs):
    net = Net()
    out = []
    for epoch in range(epochs):
        hook.on_epoch_start(net, epoch)
        out.append(net.features.whiten.bias.requires_grad)
    return out


def test_the_whitening_bias_trains_in_the_first_epochs_only():
    assert _bias_trains(Whitening(_cfg(whiten_bias_epochs=3)), 5) == [True] * 3 + [False] * 2
    assert _bias_trains(Whitening(_cfg(whiten_bias_epochs=0)), 2) == [False, False]


def test_the_whitening_bias_waits_for_a_frozen_backbone():
    unfrozen_at_1 = Whitening(_cfg(freeze="features", unfreeze_after=1, whiten_bias_epochs=3))
    assert _bias_trains(unfrozen_at_1, 4) == [False, True, True, False]
    for_good = Whitening(_cfg(freeze="features", whiten_bias_epochs=3))
    assert _bias_trains(for_good, 4) == [False] * 4
    late = Whitening(_cfg(freeze="features", unfreeze_after=5, whiten_bias_epochs=3))
    assert _bias_trains(late, 7) == [False] * 7


def test_recipe_hooks_in_order():
    net = Net()
    hooks = recipe_hooks(_cfg(freeze="features", unfreeze_after=2), net)
    assert [type(h) for h in hooks] == [FrozenFeatures, Whitening]
    assert hooks[0].unfreeze_after == 2
    assert [type(h) for h in recipe_hooks(_cfg(), net)] == [Whitening]
    net.has_whitening = False
    assert recipe_hooks(_cfg(), net) == []
    assert [type(h) for h in recipe_hooks(_cfg(freeze="features"), nn.Linear(1, 1))] == \
        [FrozenFeatures]
