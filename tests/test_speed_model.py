"""Configuration S (``vgg_speed``): airbench94's compact VGG, and the training options of its
recipe (whitening layer, fast batch-norm biases, ramped Lookahead)."""

import json

import pytest
import torch
import torch.nn as nn

from vggnet.errors import ConfigError
from vggnet.training.config import TrainConfig, validate
from vggnet.training.averaging import Lookahead
from vggnet.training.setup import build_optimizer
from vggnet.training.loop import train
from vggnet.inference.engine import optimize_for_inference
from vggnet.models import create_model, load_model
from vggnet.models.configs import CONFIGS
from vggnet.models.vgg import VGG
from vggnet.models.weights import save_weights


def _correlated_images(n=64, size=16, seed=0):
    """Images whose channels and neighbouring pixels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size // 2, size // 2, generator=g)
    base = nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False)
    mix = torch.tensor([[1.0], [0.8], [0.6]]).view(1, 3, 1, 1)
    return base * mix + 0.1 * torch.randn(n, 3, size, size, generator=g)


def test_the_network_is_airbench94s_with_the_biases_vggnet_keeps():
    model = create_model("vgg_speed", num_classes=10)
    convs = [(n, m) for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0]) for _, m in convs] == [
        (3, 24, 2), (24, 64, 3), (64, 64, 3), (64, 256, 3), (256, 256, 3), (256, 256, 3),
        (256, 256, 3)]
    # airbench94 has 1,972,792 parameters; vggnet's convolutions and fc keep their biases
    # (1,152 + 10), which the batch norm after each convolution makes inert
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_972_792 + 1_162
    # each pooling follows the convolution before it, ahead of batch norm and activation
    names = list(dict(model.features.named_children()))
    for block in (1, 2, 3):
        i = names.index(f"pool{block}")
        assert names[i - 1].startswith("conv") and names[i + 1].startswith("bn")
    assert isinstance(model.features.gelu1_1, nn.GELU)
    # fixed batch-norm scales with fast statistics
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad and m.bias.requires_grad and m.momentum == 0.4
               for m in bns)
    assert not model.features.whiten.weight.requires_grad
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 256, 3, 3)  # 32 -> 31 -> 15 -> 7 -> 3


def test_the_head_is_a_global_max_pool_and_a_linear_layer_scaled_by_one_ninth():
    model = create_model("vgg_speed", num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = model.forward_features(x)
        expected = model.head.fc(f.amax(dim=(2, 3))) / 9
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert torch.allclose(model.forward_head(f, pre_logits=True), f.amax(dim=(2, 3)))
    # the paper's heads keep their average pooling, and no scale
    conv = create_model("vgg_speed", num_classes=10, head="conv", fc_dim=32)
    assert "logit_scale" not in conv.model_config and conv(x).shape == (3, 10)


def test_convolutions_start_as_identities():
    model = create_model("vgg_speed", num_classes=10)
    for name in ("conv2_1", "conv3_1", "conv3_2", "conv4_1"):
        w = model.features.get_submodule(name).weight
        eye = torch.zeros(w.shape[1], w.shape[1], 3, 3)
        eye[range(w.shape[1]), range(w.shape[1]), 1, 1] = 1
        assert torch.equal(w[: w.shape[1]], eye), name
    conv = model.features.conv2_2  # 64 -> 256: the first 64 filters pass the input through
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert torch.allclose(conv(x)[:, :64], x, atol=1e-6)


def test_whitening_layer_decorrelates_patches_to_unit_variance():
    model = create_model("vgg_speed", num_classes=10)
    images = _correlated_images()
    model.init_whitening(images, eps=0.0)
    with torch.no_grad():
        out = model.features.whiten(images.double().float())  # N, 24, 15, 15
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = half.T @ half / len(half)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(out[:, 12:], -out[:, :12])  # both signs, so GELU loses nothing
    # ordered from the strongest direction of the data to the weakest
    norms = model.features.whiten.weight[:12].flatten(1).norm(dim=1)
    assert torch.all(norms[1:] >= norms[:-1] - 1e-6)


def test_whitening_needs_a_whitening_layer_and_images_with_the_right_channels():
    with pytest.raises(ValueError, match="no whitening layer"):
        create_model("vgg11_bn", width=0.125, fc_dim=16).init_whitening(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"N x 3 x H x W"):
        create_model("vgg_speed").init_whitening(torch.randn(2, 1, 8, 8))


def test_configuration_errors_are_explained():
    with pytest.raises(ValueError, match="must come first"):
        VGG([64, "W", "M"], num_classes=2, head="linear")
    with pytest.raises(ValueError, match="head_pool='max' needs head='linear'"):
        create_model("vgg11", head="classifier", head_pool="max")
    with pytest.raises(ValueError, match="bn_momentum"):
        create_model("vgg_speed", bn_momentum=0.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        create_model("vgg_speed", activation="tanh")
    with pytest.raises(ValueError, match="at least 9x9"):
        create_model("vgg_speed")(torch.randn(1, 3, 8, 8))


def test_paper_models_are_unchanged_by_the_new_options():
    model = create_model("vgg16_bn", width=0.125, fc_dim=16)
    assert set(model.model_config) == {"name", "num_classes", "in_channels", "width", "head",
                                       "dropout", "fc_dim", "init"}
    names = list(dict(model.features.named_children()))
    assert names[:4] == ["conv1_1", "bn1_1", "relu1_1", "conv1_2"]
    assert "W" not in CONFIGS["D"]


def test_checkpoint_round_trip_rebuilds_the_same_network(tmp_path):
    model = create_model("vgg_speed", num_classes=10)
    model.init_whitening(_correlated_images(size=32))
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))  # batch-norm statistics
    model.eval()
    save_weights(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert not again.features.whiten.weight.requires_grad
    assert not again.features.bn1_1.weight.requires_grad


def test_optimized_inference_matches_with_pooling_before_batch_norm():
    model = create_model("vgg_speed", num_classes=10)
    model.init_whitening(_correlated_images(size=32))
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 32, 32))
    model.eval()
    fast = optimize_for_inference(model)
    # every batch norm is folded, those after a pooling too (their scales are positive)
    assert not [m for m in fast.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-4)


def test_norm_bias_lr_puts_batch_norm_biases_in_their_own_faster_group():
    model = create_model("vgg_speed", num_classes=10)
    cfg = validate(TrainConfig(model="vgg_speed", lr=0.5, norm_bias_lr=64))
    groups = build_optimizer(cfg, model, torch.device("cpu")).param_groups
    biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    fast = [g for g in groups if g["lr"] == 32.0]
    assert len(fast) == 1 and {id(p) for p in fast[0]["params"]} == biases
    assert fast[0]["weight_decay"] == 0.0
    # frozen parameters (whitening weights, batch-norm scales) are in no group
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for g in groups for p in g["params"]}
    plain = build_optimizer(validate(TrainConfig(lr=0.5)), model, torch.device("cpu"))
    assert len(plain.param_groups) == 2
    with pytest.raises(ConfigError, match="norm_bias_lr"):
        validate(TrainConfig(norm_bias_lr=0))


def test_lookahead_ramp_follows_the_fast_weights_first_and_averages_at_the_end():
    model = nn.Linear(2, 1)
    la = Lookahead(model, k=5, alpha=0.25, ramp_steps=100)
    assert la.current_alpha() == 1.0
    la.steps = 50
    assert la.current_alpha() == pytest.approx(1 - 0.75 * 0.5 ** 3)
    la.steps = 100
    assert la.current_alpha() == pytest.approx(0.25)
    la.steps = 150
    assert la.current_alpha() == pytest.approx(0.25)
    assert Lookahead(model, k=5, alpha=0.25).current_alpha() == 0.25
    with pytest.raises(ConfigError, match="lookahead_ramp needs lookahead"):
        validate(TrainConfig(lookahead_ramp=True))


def test_training_sets_the_whitening_layer_from_data_and_trains_its_bias_only_at_first(tmp_path):
    from safetensors.torch import load_file

    common = dict(model="vgg_speed", data="digits", train_subset=256, test_subset=64,
                  batch_size=64, lr=0.2, progress=False,
                  whiten_bias_epochs=1, epochs=3, out=str(tmp_path / "run"),
                  norm_bias_lr=8, lookahead=0)
    train(validate(TrainConfig(**common, stop_after=1)))
    after1 = load_file(tmp_path / "run" / "last.safetensors")
    train(validate(TrainConfig(**common, resume=True)))
    after3 = load_file(tmp_path / "run" / "last.safetensors")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init"] is None  # the model's own (dirac)
    bias, weight = "features.whiten.bias", "features.whiten.weight"
    assert after1[bias].abs().sum() > 0  # trained in epoch 1 ...
    assert torch.equal(after1[bias], after3[bias])  # ... and not after
    assert torch.equal(after1[weight], after3[weight])  # the weights never train
    # and they are the whitening of the training images (ranked eigen-directions, both signs)
    w = after3[weight].flatten(1)
    assert torch.allclose(w[len(w) // 2:], -w[:len(w) // 2])
    assert not torch.allclose(w[0], torch.zeros_like(w[0]))


def _airbench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "airbench_recipe_cpu.py"
    spec = importlib.util.spec_from_file_location("airbench_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vgg_speed_is_the_network_of_the_airbench_baseline_script():
    """The CPU baseline (benchmarks/airbench_recipe_cpu.py) writes airbench94's network out
    layer by layer; vgg_speed must compute the same function from the same weights."""
    ref = _airbench_module().make_net()
    assert sum(p.numel() for p in ref.parameters()) == 1_972_792
    ours = create_model("vgg_speed", num_classes=10)
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    ref_layers = [m for m in ref.modules() if isinstance(m, kinds)]
    our_layers = [m for m in ours.modules() if isinstance(m, kinds)]
    assert len(ref_layers) == len(our_layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a, b in zip(ref_layers, our_layers):
            assert a.weight.shape == b.weight.shape
            offset = 0.5 if isinstance(a, nn.BatchNorm2d) else 0.0  # positive BN scales
            a.weight.copy_(torch.randn(a.weight.shape, generator=g) * 0.2 + offset)
            b.weight.copy_(a.weight)
            if a.bias is not None:
                a.bias.copy_(torch.randn(a.bias.shape, generator=g) * 0.1)
                b.bias.copy_(a.bias)
            elif b.bias is not None:
                b.bias.zero_()
            if isinstance(a, nn.BatchNorm2d):
                a.running_mean.copy_(torch.randn(a.running_mean.shape, generator=g) * 0.1)
                a.running_var.uniform_(0.5, 2.0, generator=g)
                b.running_mean.copy_(a.running_mean)
                b.running_var.copy_(a.running_var)
                b.eps = a.eps
    ref.eval(), ours.eval()
    x = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), rtol=1e-4, atol=1e-3)


def test_whitening_agrees_with_the_baseline_scripts_up_to_each_filters_sign():
    images = _correlated_images(size=32)
    ref = _airbench_module().make_net()
    _airbench_module().whiten(ref[0], images)
    ours = create_model("vgg_speed", num_classes=10)
    ours.init_whitening(images)
    a, b = ref[0].weight.flatten(1), ours.features.whiten.weight.flatten(1)
    sign = torch.sign((a * b).sum(1, keepdim=True))
    # float32 (the script) against float64 (vggnet) on a badly conditioned covariance
    assert torch.allclose(a, sign * b, atol=0.02, rtol=0.01)


def test_whitening_sample_normalises_in_memory_images_and_takes_streamed_batches_as_they_come():
    from vggnet.data import ImageTensors
    from vggnet.training.setup import Data

    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    data = Data(None, None, ["a"], [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], 3, 4, 10, 0,
                train_set=ImageTensors(images, torch.zeros(10, dtype=torch.long), ["a"]))
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(data.whitening_sample(6), (images[:6] / 255 - mean) / std)

    class Streamed:  # a streaming loader yields normalised batches
        def batches(self, skip):
            for i in range(5):
                yield torch.full((4, 3, 4, 4), float(i)), torch.zeros(4)

    streamed = Data(Streamed(), None, ["a"], [0.0] * 3, [1.0] * 3, 3, 4, 20, 0)
    sample = streamed.whitening_sample(6)
    assert sample.shape == (6, 3, 4, 4) and sample[:4].eq(0).all() and sample[4:].eq(1).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_optimizer_is_fused_and_steps_exactly_as_the_foreach_one(optimizer):
    """One fused kernel per step on the CPU (much faster than foreach over VGG's tensors),
    with the very same parameters after a few steps (SGD to the bit)."""
    cfg = validate(TrainConfig(lr=0.05, optimizer=optimizer, weight_decay=5e-4))
    models = [create_model("vgg11_bn", num_classes=10, width=0.25) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(cfg, models[0], torch.device("cpu"))
    assert all(g["fused"] for g in fused.param_groups)
    twin = {id(a): b for a, b in zip(models[0].parameters(), models[1].parameters())}
    plain = type(fused)([{**{k: v for k, v in g.items() if k not in ("fused", "foreach")},
                          "params": [twin[id(p)] for p in g["params"]]}
                         for g in fused.param_groups], foreach=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    exact = optimizer == "sgd"  # fused AdamW rounds in another order: last-bit differences
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0 if exact else 1e-6)
