"""Grad-CAM and Grad-CAM++: parity with torchcam, the formula of Grad-CAM++ computed
independently in float64, taps that are safe before and after in-place ReLUs, the command."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vggnet.cli import main
from vggnet.errors import ConfigError
from vggnet.features import default_layer, grad_cam
from vggnet.models import create_model

from helpers import train_tiny_run, write_image

SMALL = dict(width=0.25, fc_dim=64, num_classes=10)


def _not_inplace(model):
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return model


def _torchcam(model, x, layer, cls):
    torchcam = pytest.importorskip("torchcam.methods")
    with torchcam.GradCAM(model, f"features.{layer}", input_shape=tuple(x.shape[1:])) as cam:
        scores = model(x)
        return cam(class_idx=cls, scores=scores)[0]


@pytest.mark.parametrize("name,layer", [("vgg16_bn", "relu5_3"), ("vgg16", "relu4_3"),
                                        ("vgg11", "relu5_2"), ("vgg19_bn", "relu3_4")])
def test_grad_cam_equals_torchcam(name, layer):
    model = create_model(name, **SMALL).eval()
    x = torch.randn(3, 3, 64, 64)
    ours = grad_cam(model, x, layer)
    cls = [r.class_index for r in ours]
    assert cls == model(x).argmax(1).tolist()  # default: each image's top class
    ref = _torchcam(model, x, layer, cls)
    got = torch.stack([r.normalized() for r in ours])
    assert got.shape == ref.shape and (got - ref).abs().max() <= 1e-5
    assert got.amax((1, 2)).min() > 0.99  # a real map, normalised to [0, 1]


def test_a_tap_on_a_convolution_is_before_its_in_place_relu():
    """conv5_3 is the convolution's output, though the model's ReLU after it is in place
    (hook-based tools then see the ReLU's output there): it equals torchcam's on the same
    weights with out-of-place ReLUs, and differs from the relu5_3 map."""
    model = create_model("vgg16", **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    cls = [3, 7]
    ours = torch.stack([r.normalized() for r in grad_cam(model, x, "conv5_3", cls)])
    twin = _not_inplace(create_model("vgg16", **SMALL))
    twin.load_state_dict(model.state_dict())
    ref = _torchcam(twin.eval(), x, "conv5_3", cls)
    assert (ours - ref).abs().max() <= 1e-5
    after = torch.stack([r.normalized() for r in grad_cam(model, x, "relu5_3", cls)])
    assert (ours - after).abs().max() > 1e-3
    # and the model itself was not changed by the taps: same logits as before
    assert torch.equal(model(x), twin(x))


def test_grad_cam_plus_plus_follows_the_papers_formula():
    """Grad-CAM++ weights (Chattopadhyay et al., Eq. 19): alpha = g^2 / (2 g^2 + sum_ab A g^3),
    w = sum_ij alpha relu(g), computed here in float64 from a hook, apart from vggnet's code."""
    model = create_model("vgg11_bn", **SMALL).eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ours = grad_cam(model, x, "relu4_2", [1, 4], method="gradcam++")
    acts = {}
    twin = _not_inplace(create_model("vgg11_bn", **SMALL)).double().eval()
    twin.load_state_dict(model.state_dict())
    twin.features.relu4_2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    logits = twin(x)
    a = acts["a"]
    (g,) = torch.autograd.grad(logits[0, 1] + logits[1, 4], a)
    a, g = a.detach().numpy(), g.numpy()
    for n, r in enumerate(ours):
        gn, an = g[n], a[n]
        denom = 2 * gn ** 2 + an.sum((1, 2), keepdims=True) * gn ** 3
        alpha = np.where(denom != 0, gn ** 2 / np.where(denom != 0, denom, 1), 0)
        w = (alpha * np.maximum(gn, 0)).sum((1, 2))
        cam = np.maximum((w[:, None, None] * an).sum(0), 0)
        np.testing.assert_allclose(r.cam.numpy(), cam, rtol=1e-9, atol=1e-12)
    assert not np.allclose(ours[0].cam.numpy(), grad_cam(model, x, "relu4_2", [1, 4])[0]
                           .cam.numpy())  # not Grad-CAM under another name


def test_default_layers_and_errors():
    assert default_layer(create_model("vgg16", **SMALL)) == "relu5_3"  # the paper's, not pool5
    assert default_layer(create_model("vgg19_bn", **SMALL)) == "relu5_4"
    model = create_model("vgg16", **SMALL).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ConfigError, match=r"unknown layer 'conv5_4' \(did you mean conv5_3\?\)"
                       r".*conv1_1, relu1_1"):
        grad_cam(model, x, "conv5_4")
    with pytest.raises(ConfigError, match="not one of the model's 10 classes"):
        grad_cam(model, x, class_index=10)
    with pytest.raises(ConfigError, match="unknown method"):
        grad_cam(model, x, method="cam")
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_grad_cam_runs_one_forward_pass(monkeypatch):
    """No second forward: every layer runs once per map."""
    model = create_model("vgg11", **SMALL).eval()
    calls = []
    for name, m in list(model.features.named_children()) + list(model.head.named_children()):
        m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    grad_cam(model, torch.randn(1, 3, 64, 64))
    assert len(calls) == len(set(calls))  # no layer twice
    # every layer once; the ReLUs after the tap (relu5_2) run out of place, as functions
    after = model.tap_names()[model.tap_names().index("relu5_2") + 1:]
    relus_after = [n for n in after if n.startswith("relu")]
    assert relus_after == ["relu6", "relu7"]
    assert set(calls) == set(model.tap_names()) - set(relus_after)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    train_tiny_run(out)
    return out


def test_explain_command_writes_heatmaps_and_raw_maps(run, tmp_path, capsys):
    from PIL import Image

    a = write_image(tmp_path / "in" / "a.png", size=(40, 30))
    b = write_image(tmp_path / "in2" / "a.jpg", size=(64, 64), seed=3)  # same stem
    (tmp_path / "bad.jpg").write_text("no image")
    rc = main(["explain", str(run), str(a), str(b), str(tmp_path / "bad.jpg"),
               "--out", str(tmp_path / "out"), "--layer", "conv4_2"])
    assert rc == 1  # the bad file is reported, the others are explained
    out, err = capsys.readouterr()
    assert "bad.jpg: not an image" in err and err.count("\n") == 1
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in pngs] == ["a.gradcam.png", "a_2.gradcam.png"]
    with Image.open(pngs[0]) as im:
        assert im.width == 2 * im.height + 8 and im.height >= 224  # picture | overlay
    raw = np.load(tmp_path / "out" / "a.gradcam.npy")
    assert raw.dtype == np.float32 and raw.ndim == 2 and (raw >= 0).all()
    assert "at conv4_2" in out
    assert main(["explain", str(run), str(a), "--class", "11"]) == 2
    assert "closest" in capsys.readouterr().err


def test_overlay_blends_the_heatmap_over_the_picture():
    from PIL import Image

    from vggnet.features.explain import overlay

    image = Image.new("RGB", (8, 8), (0, 0, 0))
    cam = torch.zeros(2, 2)
    cam[0, 0] = 1.0
    out = np.asarray(overlay(image, cam, alpha=1.0)).astype(int)
    hot, cold = out[0, 0], out[-1, -1]
    assert hot[0] > 100 and cold[2] > 100  # jet: red where the map is 1, blue where 0
    assert np.asarray(overlay(image, cam, alpha=0.0)).max() == 0


def test_upsampled_maps_stay_in_range():
    model = create_model("vgg11", **SMALL).eval()
    r = grad_cam(model, torch.randn(1, 3, 64, 64))[0]
    up = r.normalized((64, 64))
    assert up.shape == (64, 64) and up.min() >= 0 and up.max() <= 1
    assert torch.allclose(F.interpolate(r.cam[None, None], (64, 64), mode="bilinear")[0, 0]
                          .argmax(), up.argmax())


def test_torchcam_gradcampp_is_not_the_papers_formula():
    """Why torchcam is not the reference for Grad-CAM++ (docs/features.md says so): in torchcam
    0.5 the division of alpha acts on a boolean-masked copy and is lost, so its weights are
    sum(g^2 relu(g)). If this starts failing, torchcam was fixed: compare against it then."""
    torchcam = pytest.importorskip("torchcam.methods")
    model = _not_inplace(create_model("vgg11", **SMALL)).eval()
    x = torch.randn(1, 3, 64, 64)
    acts = {}
    handle = model.features.relu4_2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    (g,) = torch.autograd.grad(model(x)[0, 3], acts["a"])
    handle.remove()
    a = acts["a"].detach()
    w = (g.pow(2) * F.relu(g)).sum((2, 3))
    lost = F.relu((w[:, :, None, None] * a).sum(1))
    lost = (lost - lost.amin()) / (lost.amax() - lost.amin() + 1e-8)
    with torchcam.GradCAMpp(model, "features.relu4_2", input_shape=(3, 64, 64)) as cam:
        ref = cam(class_idx=3, scores=model(x))[0]
    assert (ref - lost).abs().max() <= 1e-5
    ours = grad_cam(model, x, "relu4_2", 3, method="gradcam++")[0].normalized()
    assert (ours - ref).abs().max() > 1e-2


def test_features_grid_and_embeddings(run, tmp_path, capsys):
    from PIL import Image

    from vggnet.io import open_image
    from vggnet.predict import Predictor
    from vggnet.run import load_checkpoint

    a = write_image(tmp_path / "imgs" / "a.png", size=(40, 30))
    b = write_image(tmp_path / "imgs" / "b.png", size=(20, 20), seed=5)
    (tmp_path / "imgs" / "c.png").write_bytes(b"")  # unreadable: reported, the rest embedded
    assert main(["features", str(run), str(a), "--layers", "relu1_1,relu4_2", "--top", "3",
                 "--out", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as im:  # 2 rows; the picture + 3 channels each
        assert im.size == (4 * (96 + 4), 2 * (96 + 16 + 4))
    assert main(["features", str(run), str(tmp_path / "imgs"), "--embed", "--layers",
                 "relu4_2", "--out", str(tmp_path / "emb"), "--precision", "fp32"]) == 1
    vectors = np.load(tmp_path / "emb.npy")
    files = (tmp_path / "emb.txt").read_text().split()
    assert files == [str(a), str(b)] and vectors.shape == (2, 64)  # 512 x width 0.125
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    p = Predictor(run)
    model, _ = load_checkpoint(run)
    with torch.inference_mode():
        act = model.eval().extract(p.preprocess(open_image(b)),
                                   ["relu4_2"])["relu4_2"].mean((2, 3))
    np.testing.assert_allclose(vectors[1], F.normalize(act, dim=1)[0].numpy(), atol=1e-5)
    assert main(["features", str(run), str(tmp_path / "imgs"), "--embed", "--layers",
                 "relu4_2", "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 1
    cosine = (np.load(tmp_path / "bf16.npy") * vectors).sum(1)  # both unit vectors
    assert cosine.min() > 0.99
    capsys.readouterr()
    assert main(["features", str(run), str(a), str(b)]) == 2  # a grid is of one image
    assert main(["features", str(run), str(a), "--layers", "relu9_9"]) == 2
    err = capsys.readouterr().err
    assert "--embed" in err and "unknown layer(s) 'relu9_9'" in err


_LPIPS: list = []  # built once: two full VGG-16s with random weights cost seconds each time


def _lpips_reference_and_backbone(tmp_path=None):
    """The lpips package's LPIPS on a random VGG-16 trunk (no download), and that trunk's
    weights as a vggnet vgg16 (and, with tmp_path, as a torchvision-format file)."""
    if not _LPIPS:
        _LPIPS.append(_build_lpips_reference())
    ref, backbone, sd = _LPIPS[0]
    path = None
    if tmp_path is not None:
        path = tmp_path / "trunk.pth"
        torch.save(sd, path)
    return ref, backbone, path


def _build_lpips_reference():
    lpips = pytest.importorskip("lpips")
    import warnings

    from vggnet.models.weights import to_vggnet_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice about lpips's old arguments
        ref = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    sd = {f"features.{k}": v for s in range(1, 6)
          for k, v in getattr(ref.net, f"slice{s}").state_dict().items()}
    backbone = create_model("vgg16")
    backbone.load_state_dict(to_vggnet_state_dict(sd, backbone, "torchvision"), strict=False)
    return ref, backbone, sd


def test_lpips_equals_the_lpips_package():
    from vggnet.features.perceptual import LPIPS

    ref, backbone, _ = _lpips_reference_and_backbone()
    ours = LPIPS(backbone)
    a, b = torch.rand(3, 3, 64, 48) * 2 - 1, torch.rand(3, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        got, want = ours(a, b), ref(a, b)
    assert got.shape == want.shape == (3, 1, 1, 1)
    assert (got - want).abs().max() <= 1e-5 and (want > 0).all()
    assert float(ours(a, a).abs().max()) < 1e-6  # a distance: zero to itself
    # the same images given in [0, 1] with input_range="[0,1]": the same distance
    zero_one = LPIPS(backbone, input_range="[0,1]")
    with torch.no_grad():
        assert (zero_one((a + 1) / 2, (b + 1) / 2) - want).abs().max() <= 1e-5


def test_lpips_checks_the_input_range():
    from vggnet.errors import InputError
    from vggnet.features.perceptual import LPIPS

    _, backbone, _ = _lpips_reference_and_backbone()
    metric = LPIPS(backbone)
    with pytest.raises(InputError, match=r"outside the expected \[-1, 1\].*2 \* x - 1"):
        metric(torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 32, 32))
    with pytest.warns(UserWarning, match="no negative value.*input_range='\\[0,1\\]'"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))  # [0, 1] fed as [-1, 1]
    with pytest.raises(InputError, match="look like \\[-1, 1\\] images"):
        LPIPS(backbone, input_range="[0,1]")(torch.rand(1, 3, 32, 32) * 2 - 1,
                                              torch.rand(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="not vgg19"):
        with torch.device("meta"):  # only its architecture is read
            LPIPS(create_model("vgg19"))


def test_lpips_calibration_file_errors(tmp_path):
    from vggnet.errors import WeightsError
    from vggnet.features.perceptual import lpips_linear_weights

    with pytest.raises(WeightsError, match="not found"):
        lpips_linear_weights(tmp_path / "none.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not LPIPS v0.1"):
        lpips_linear_weights(tmp_path / "other.pth")


def test_compare_command_prints_the_lpips_distance(tmp_path, capsys):
    from PIL import Image

    ref, _, trunk = _lpips_reference_and_backbone(tmp_path)
    a = write_image(tmp_path / "a.png", size=(48, 40), seed=1)
    b = write_image(tmp_path / "b.png", size=(48, 40), seed=2)
    assert main(["compare", str(a), str(b), "--weights", str(trunk), "--per-layer"]) == 0
    out = capsys.readouterr().out
    value = float(out.split()[1])

    def t(p):
        return torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5
                                - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        assert abs(value - float(ref(t(a), t(b)))) < 1e-5
    assert out.count("relu") == 5
    c = write_image(tmp_path / "c.png", size=(20, 30), seed=3)
    assert main(["compare", str(a), str(c), "--weights", str(trunk)]) == 0
    assert "resized from 20x30 to 48x40" in capsys.readouterr().out


def test_perceptual_loss_presets_and_taps():
    from vggnet.errors import InputError
    from vggnet.features.perceptual import PRESETS, VGGPerceptualLoss, gram

    backbone = create_model("vgg19", width=0.25).eval()
    loss = VGGPerceptualLoss(backbone, preset="esrgan")
    assert PRESETS["esrgan"]["features"] == {"conv5_4": 1.0}
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    value = loss(x, y)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():  # conv5_4 is before its ReLU: it has negative values
        fx = backbone.extract((x - mean) / std, ["conv5_4"])["conv5_4"]
        fy = backbone.extract((y - mean) / std, ["conv5_4"])["conv5_4"]
    assert (fx < 0).any()
    assert torch.allclose(value, F.l1_loss(fx, fy), rtol=1e-5)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # usable as a training loss
    style = VGGPerceptualLoss(backbone, features={}, styles={"relu2_1": 2.0}, criterion="l2")
    with torch.no_grad():
        gx = gram(backbone.extract((x - mean) / std, ["relu2_1"])["relu2_1"])
        gy = gram(backbone.extract((y - mean) / std, ["relu2_1"])["relu2_1"])
        assert torch.allclose(style(x, y), 2 * F.mse_loss(gx, gy), rtol=1e-5)
    with pytest.raises(InputError, match="\\[0, 1\\] RGB"):
        loss(x * 2 - 1, y)
    with pytest.raises(ConfigError, match="unknown preset"):
        VGGPerceptualLoss(backbone, preset="lpips")
    with pytest.raises(ConfigError, match="unknown layer"):
        VGGPerceptualLoss(backbone, features={"conv5_5": 1.0})


def test_features_follow_auto_precision_by_the_cpus_flags(run, monkeypatch):
    from vggnet import device
    from vggnet.features.maps import FeatureExtractor

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert FeatureExtractor(run).precision == "bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    assert FeatureExtractor(run).precision == "fp32"
    assert FeatureExtractor(run, precision="bf16").precision == "bf16"  # asked, not auto
