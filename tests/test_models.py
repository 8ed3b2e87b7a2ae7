"""The model zoo: architectures, heads, interface, against the paper and torchvision."""

import logging

import pytest
import torch
import torch.nn as nn
import torchvision

import vggnet
from vggnet.models import (CONFIGS, PAPER_CONFIG, UnknownModelError, create_model, list_models,
                           register_model, summarize)

ALL = [n for n in list_models() if n in PAPER_CONFIG]  # the paper's twelve
# The 8 models torchvision also has (it has no A-LRN and no C).
TORCHVISION = [n for n in ALL if "lrn" not in n and "_c" not in n]
SMALL = dict(width=0.125, fc_dim=64)  # the same architecture, narrow, for fast structural tests

# Table 2 of the paper and torchvision's documented figures.
PARAMS = {"vgg11": 132_863_336, "vgg16_c": 133_638_952, "vgg16": 138_357_544,
          "vgg19": 143_667_240, "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736,
          "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248, "vgg13": 133_047_848}
GMACS = {"vgg11": 7.609, "vgg13": 11.308, "vgg16": 15.470, "vgg19": 19.632}


def test_registry_lists_every_paper_configuration_with_and_without_bn():
    expected = {"vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19"}
    assert expected | {n + "_bn" for n in expected} == set(ALL)
    assert set(list_models()) == set(ALL) | {"vgg_speed"}  # and the CIFAR speed network
    assert {PAPER_CONFIG[n] for n in ALL} | {"S"} == set(CONFIGS)


def test_duplicate_registration_raises():
    def vgg16(**kw):
        return None

    with pytest.raises(ValueError, match="already registered"):
        register_model(vgg16)


def test_unknown_model_names_valid_choices_and_closest():
    with pytest.raises(UnknownModelError) as err:
        create_model("vgg16_bm")
    msg = str(err.value)
    assert "'vgg16_bn'" in msg and "vgg11_lrn" in msg


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    if name in PARAMS:
        assert n == PARAMS[name]
    with_bn = name.endswith("_bn")
    if with_bn:  # batch norm adds a scale and a shift per conv channel
        with torch.device("meta"):
            plain = create_model(name[:-3])
        convs = [m.out_channels for m in plain.features if isinstance(m, nn.Conv2d)]
        assert n == sum(p.numel() for p in plain.parameters()) + 2 * sum(convs)


@pytest.mark.parametrize("name", sorted(GMACS))
def test_macs_and_receptive_field_match_published(name):
    with torch.device("meta"):
        model = create_model(name)
    s = summarize(model, 224)
    assert round(s.total_macs / 1e9, 3) == GMACS[name]
    if name == "vgg16":
        assert s.row("conv5_3").rf == 196 and s.row("pool5").rf == 212
        assert s.row("pool5").stride == 32


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("head", ["classifier", "conv", "linear"])
def test_forward_shapes_any_size(name, head):
    model = create_model(name, num_classes=7, head=head, **SMALL).eval()
    with torch.no_grad():
        for size in [(32, 32), (224, 224), (64, 96)]:
            out = model(torch.randn(2, 3, *size))
            assert out.shape == (2, 7), (size, out.shape)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    model = create_model(name, num_classes=5, **SMALL)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_parity_both_heads(name):
    """Same weights -> same outputs as torchvision (fp32, max abs difference <= 1e-5): at
    224 px for one plain and one batch-norm model, at 32 px (the 1x1 map stretched to 7x7 by
    the adaptive pooling) for the others, whose layers the same code builds."""
    ref = getattr(torchvision.models, name)().eval()
    size = 224 if name in ("vgg16", "vgg16_bn") else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        for head in ("classifier", "conv"):
            model = create_model(name, head=head, weights=ref.state_dict()).eval()
            assert (model(x) - expected).abs().max().item() <= 1e-5, head
        # back to torchvision's names and shapes, exactly
        back = vggnet.to_torchvision_state_dict(model)
        sd = ref.state_dict()
        assert back.keys() == sd.keys()
        assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_timm_format_parity():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vgg16_bn", pretrained=False).eval()
    model = create_model("vgg16_bn", head="conv", weights=ref.state_dict()).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-5
        # also at a size where the class-score map is larger than 1x1
        x = torch.randn(1, 3, 288, 256)
        assert (model(x) - ref(x)).abs().max().item() <= 1e-5


def test_vggnet_round_trip_through_safetensors(tmp_path):
    model = create_model("vgg11_lrn_bn", num_classes=10, **SMALL).eval()
    path = vggnet.save_weights(model, tmp_path / "w.safetensors")
    again = vggnet.load_model(path).eval()
    assert again.model_config == model.model_config
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), again(x))


def test_pth_and_wrapped_checkpoints_load(tmp_path):
    src = create_model("vgg13", num_classes=4, **SMALL)
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "ckpt.pth")
    dst = create_model("vgg13", num_classes=4, weights=tmp_path / "ckpt.pth", **SMALL)
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())


def test_other_num_classes_reinitialises_last_layer_with_message(caplog):
    ref = torchvision.models.vgg11()
    with caplog.at_level(logging.WARNING, logger="vggnet"):
        model = create_model("vgg11", num_classes=10, weights=ref.state_dict())
    assert "re-initialised for 10 classes" in caplog.text and "1000" in caplog.text
    assert torch.equal(model.head.fc7.weight, ref.classifier[3].weight)
    assert torch.equal(model.features.conv1_1.weight, ref.features[0].weight)
    assert model.head.fc8.weight.shape == (10, 4096)


def test_linear_head_takes_backbone_of_torchvision_weights(caplog):
    ref = torchvision.models.vgg11_bn()
    with caplog.at_level(logging.WARNING, logger="vggnet"):
        model = create_model("vgg11_bn", head="linear", num_classes=10, weights=ref.state_dict())
    assert "initialised afresh" in caplog.text
    assert torch.equal(model.features.bn5_2.running_var, ref.features[26].running_var)


def test_wrong_architecture_names_keys_and_the_fitting_architecture():
    sd = torchvision.models.vgg16().state_dict()
    with pytest.raises(vggnet.WeightsMismatchError) as err:
        create_model("vgg11", weights=sd)
    msg = str(err.value)
    assert "features." in msg and "fit vgg16" in msg
    assert "size mismatch" not in msg


def test_wrong_width_is_a_clear_error():
    sd = create_model("vgg11_bn", width=0.5, head="linear").state_dict()
    with pytest.raises(vggnet.WeightsMismatchError, match=r"fit vgg11_bn \(width 0.5\)"):
        create_model("vgg11_bn", weights=sd)


def test_extract_returns_named_taps_and_stops_early():
    model = create_model("vgg16", **SMALL).eval()
    ran = []
    model.features.conv5_1.register_forward_hook(lambda *a: ran.append("conv5_1"))
    x = torch.randn(1, 3, 64, 64)
    taps = model.extract(x, ["relu1_2", "conv3_3", "relu3_3"])
    assert list(taps) == ["relu1_2", "conv3_3", "relu3_3"]
    assert taps["relu1_2"].shape == (1, 16 // 2, 64, 64)
    assert taps["conv3_3"].min() < 0 and taps["relu3_3"].min() >= 0  # tap before the ReLU
    assert torch.equal(taps["relu3_3"], taps["conv3_3"].clamp(min=0))
    assert ran == []  # nothing past the deepest tap ran
    full = model.extract(x, ["fc8"])["fc8"]
    assert torch.allclose(full, model(x))
    with pytest.raises(KeyError, match="conv5_4"):
        model.extract(x, ["conv5_4"])


def test_forward_head_pre_logits_and_reset_classifier():
    model = create_model("vgg11", num_classes=10, **SMALL).eval()
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    model.reset_classifier(3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert model.model_config["num_classes"] == 3


@pytest.mark.parametrize("name", ALL)
def test_fc_to_conv_conversion_is_exact(name):
    model = create_model(name, num_classes=10, **SMALL).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = model(x)
        model.set_head("conv")
        assert torch.allclose(model(x), y, atol=1e-6, rtol=1e-5)
        assert model.score_map(torch.randn(1, 3, 320, 288)).shape == (1, 10, 4, 3)
        model.set_head("classifier")
        assert torch.allclose(model(x), y, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("init", ["kaiming", "paper", "xavier"])
def test_init_schemes(init):
    model = create_model("vgg11", init=init, width=0.5, fc_dim=512)
    w = model.features.conv3_1.weight
    if init == "paper":
        assert abs(w.std().item() - 1e-2) < 1e-3
    elif init == "kaiming":  # He: std = sqrt(2 / fan_out)
        assert abs(w.std().item() - (2 / (w.shape[0] * 9)) ** 0.5) < 2e-3
    else:
        bound = (6 / (w.shape[1] * 9 + w.shape[0] * 9)) ** 0.5
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_lrn_follows_the_paper_formula():
    """b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta (no division by n)."""
    model = create_model("vgg11_lrn", **SMALL).eval()
    norm = model.features.norm1
    a = torch.randn(1, 8, 4, 4) * 30
    out = norm(a)
    sq = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    s = sum(sq[:, i:i + 8] for i in range(5))
    assert torch.allclose(out, a / (2 + 1e-4 * s).pow(0.75), rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(head="dense"), dict(init="he"), dict(num_classes=0),
                                dict(width=-1), dict(dropout=1.5),
                                # sizes no VGG has, which overflowed inside PyTorch (found by
                                # the long fuzzing campaign: width 988607)
                                dict(width=988607.0), dict(fc_dim=10 ** 12),
                                dict(num_classes=2 ** 40)])
def test_invalid_options_are_clear(kw):
    with pytest.raises(ValueError, match="must be"):
        create_model("vgg11", **kw)


@pytest.mark.parametrize("name", ALL)
def test_torch_export_matches_eager(name):
    model = create_model(name, num_classes=10, head="linear", **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_in_channels_and_summary_cli(capsys):
    from vggnet.cli import main

    assert main(["summary", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "138,357,544" in out and "15.470 G" in out and "conv5_3" in out
    model = create_model("vgg11", in_channels=1, **SMALL)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1000)
    assert main(["summary", "nope"]) == 2


@pytest.mark.parametrize("shape, match", [
    ((3, 32, 32), "batch of images N x C x H x W"),
    ((1, 1, 32, 32), "built for 3 input channel"),
    ((1, 3, 31, 40), "at least 32x32 pixels"),
])
def test_inputs_the_network_cannot_take_are_one_line_errors(shape, match):
    model = create_model("vgg11", width=0.125, fc_dim=16, num_classes=3)
    with pytest.raises(ValueError, match=match) as err:
        model(torch.randn(*shape))
    assert "\n" not in str(err.value)
    assert model(torch.randn(1, 3, 32, 40)).shape == (1, 3)


@pytest.mark.parametrize("dtype, match", [
    (torch.uint8, "takes floating-point images; got torch.uint8 \\(raw pixels\\?"),
    (torch.float64, "weights are torch.float32 and the images torch.float64"),
    (torch.bfloat16, "weights are torch.float32 and the images torch.bfloat16"),
])
def test_images_of_another_dtype_than_the_weights_are_one_line_errors(dtype, match):
    """Raw uint8 pixels (torchvision.io.read_image's) or float64 arrays would otherwise fail
    deep inside a convolution ("Input type (unsigned char) and bias type (float) ...")."""
    model = create_model("vgg11", width=0.125, fc_dim=16, num_classes=3)
    with pytest.raises(ValueError, match=match) as err:
        model(torch.zeros(1, 3, 32, 32, dtype=dtype))
    assert "\n" not in str(err.value)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the model: allowed
        assert model(torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16)).shape == (1, 3)


@pytest.mark.parametrize("name", list_models())
def test_the_architecture_of_any_state_dict_is_recognised(name):
    """Every registered model, vgg_speed's whitening layer included, at a reduced width: its
    state dict names it (A-LRN's LRN has no weights, so it reads as A)."""
    from vggnet.models.factory import infer_architecture

    with torch.device("meta"):
        sd = create_model(name, width=0.5, num_classes=10).state_dict()
    expected = name.replace("_lrn", "")
    assert infer_architecture(sd) in (f"{expected} (width 0.5)", f"{name} (width 0.5)")
