"""A practitioner's folder of photos: images of many sizes and modes train with no size flag,
and weights trained on ImageNet (a torchvision file, or ``imagenet`` from the local cache
offline) set the model, the input size and the normalization, keeping fc6/fc7."""

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

from helpers import photo_folder, write_image
from vggnet.cli import main
from vggnet.errors import ConfigError
from vggnet.models import hub
from vggnet.run import read_run_metadata
from vggnet.training.config import resolve
from vggnet.training.setup import build_model
from vggnet.training.transfer import MAX_IMPLIED_SIZE


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos") / "photos")


def test_a_folder_of_mixed_photos_trains_with_no_size_flag(photos, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vggnet")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken.jpg"):  # said, skipped, never fatal
        assert main(["train", "--data", str(photos), "--width", "0.125", "--epochs", "1",
                     "--out", str(out), "--progress", "false"]) == 0
    config = json.loads((out / "config.json").read_text())
    # median shorter side 300 px -> the largest implied size
    assert config["image_size"] == MAX_IMPLIED_SIZE
    assert "image_size 224" in caplog.text and "--image-size N to choose" in caplog.text
    meta = read_run_metadata(out)
    assert meta.data["train_images"] + meta.data["test_images"] == 3 * 6 + 4  # bad file out
    assert meta.preprocessing.input_size == MAX_IMPLIED_SIZE


def test_the_size_rule_follows_the_data_and_the_training_scales(tmp_path):
    small = tmp_path / "small"
    for i, size in enumerate([(50, 40), (70, 90), (64, 64)]):
        for c in ("a", "b"):
            write_image(small / c / f"{i}.png", size=size, seed=i)
    cfg = resolve(None, {"data": str(small)})
    assert cfg.image_size == 64  # shorter sides 40, 64, 70: the median, a multiple of 32
    assert "image_size" in cfg.inherited
    cfg = resolve(None, {"data": str(small), "scale": "40", "scale_max": "56",
                         "crop_size": "40"})
    assert cfg.image_size == 56  # the largest training scale
    assert resolve(None, {"data": str(small), "image_size": "48"}).inherited == {}
    same = tmp_path / "same"
    for c in ("a", "b"):
        for i in range(2):
            write_image(same / c / f"{i}.png", size=(40, 40), seed=i)
    assert resolve(None, {"data": str(same)}).image_size is None  # one size: taken as is


@pytest.fixture(scope="module")
def tv_vgg16_bn(tmp_path_factory):
    """torchvision's VGG-16-BN state dict as its published file is laid out (fp16 halves the
    file; loading converts to the model's float32)."""
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.vgg16_bn().state_dict()
    path = tmp_path_factory.mktemp("tv") / "vgg16_bn-tv.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, path)
    return path


def _check_imagenet_model(cfg, model, sd):
    assert (cfg.model, cfg.head, cfg.fc_dim, cfg.normalize) == ("vgg16_bn", "classifier",
                                                                 4096, "imagenet")
    assert (cfg.image_size, cfg.scale, cfg.crop_size) == (256, 256, 224)
    # fc6 and fc7 are ImageNet's; the last layer is new, for the folder's classes
    torch.testing.assert_close(model.head.fc6.weight.reshape(4096, -1),
                               sd["classifier.0.weight"].float(), rtol=0, atol=0)
    torch.testing.assert_close(model.head.fc7.weight.reshape(4096, -1),
                               sd["classifier.3.weight"].float(), rtol=0, atol=0)
    assert model.head.fc8.weight.shape[0] == 3
    torch.testing.assert_close(model.features.conv5_3.weight,
                               sd["features.40.weight"].float(), rtol=0, atol=0)


def test_a_torchvision_file_sets_model_size_and_normalization(tv_vgg16_bn, photos, caplog):
    caplog.set_level(logging.INFO, logger="vggnet")
    cfg = resolve(None, {"data": str(photos), "weights": str(tv_vgg16_bn)})
    sd = torch.load(tv_vgg16_bn, weights_only=True)
    _check_imagenet_model(cfg, build_model(cfg, num_classes=3), sd)
    assert cfg.inherited["model"] == ("vgg16_bn", str(tv_vgg16_bn))  # the log says whence
    # a flag wins over what the weights lend; --head linear drops fc6/fc7
    cfg = resolve(None, {"data": str(photos), "weights": str(tv_vgg16_bn), "head": "linear",
                         "crop_size": "192"})
    assert (cfg.head, cfg.crop_size, cfg.scale) == ("linear", 192, 256)
    assert "head" not in cfg.inherited


def test_imagenet_weights_offline_from_the_cache_folder_the_guide_names(
        tv_vgg16_bn, photos, tmp_path, monkeypatch):
    """`--weights imagenet` with no model: VGG-16-BN, read from $TORCH_HOME/hub/checkpoints
    under its download name, checksum-verified (a stand-in file here, so the expected hash
    is the stand-in's)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    digest = hashlib.sha256(tv_vgg16_bn.read_bytes()).hexdigest()[:8]
    url = f"https://download.pytorch.org/models/vgg16_bn-{digest}.pth"
    monkeypatch.setitem(hub.URLS, "vgg16_bn", url)
    place = tmp_path / "torch" / "hub" / "checkpoints" / f"vgg16_bn-{digest}.pth"
    assert hub.cached_path("vgg16_bn") == place
    place.parent.mkdir(parents=True)
    place.write_bytes(tv_vgg16_bn.read_bytes())
    sd = torch.load(tv_vgg16_bn, weights_only=True)
    for weights in ("imagenet", "vgg16_bn.tv_in1k"):
        cfg = resolve(None, {"data": str(photos), "weights": weights})
        _check_imagenet_model(cfg, build_model(cfg, num_classes=3), sd)
    # a named model without published weights is refused with the list of those that have
    with pytest.raises(ConfigError, match="vgg11, vgg11_bn, vgg13"):
        resolve(None, {"data": str(photos), "weights": "imagenet", "model": "vgg16_c"})
    with pytest.raises(ConfigError, match="are vgg16_bn's, but the model is vgg11"):
        resolve(None, {"data": str(photos), "weights": "vgg16_bn.tv_in1k", "model": "vgg11"})
    # the real file name of the download: the offline hint names it and its folder
    monkeypatch.setitem(hub.URLS, "vgg16_bn", "https://download.invalid/vgg16_bn-6c64b313.pth")
    with pytest.raises(Exception, match="vgg16_bn-6c64b313.pth into .*hub/checkpoints"):
        hub.pretrained_file("vgg16_bn", progress=False)


def test_the_guides_commands_run_in_order_on_a_fine_tune_of_a_jittered_run(photos, tmp_path,
                                                                           capsys):
    """The fine-tune guide's path (train, evaluate, export int8, predict, serve) on the run
    shape that broke exports: a fine-tune of a run trained with scale jittering on crops
    smaller than its images (a tiny stand-in for imagenette_quick where the guide has the
    ImageNet weights)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vggnet.serve import ServeSettings, create_app

    base, run = tmp_path / "base", tmp_path / "runs" / "photos"
    assert main(["train", "--data", str(photos), "--width", "0.125", "--epochs", "1",
                 "--image-size", "64", "--scale", "48", "--scale-max", "64", "--crop-size", "48",
                 "--crop-padding", "0", "--out", str(base), "--progress", "false"]) == 0
    assert main(["train", "--data", str(photos), "--weights", str(base), "--freeze", "features",
                 "--unfreeze-after", "1", "--epochs", "2", "--out", str(run),
                 "--progress", "false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "top-1" in capsys.readouterr().out and (run / "confusion.png").is_file()
    assert main(["export", str(run), "--format", "openvino", "--int8"]) == 0
    assert "agrees with fp32 on" in capsys.readouterr().out
    assert main(["predict", str(run), str(photos / "cat"), "--json"]) == 0
    out = capsys.readouterr()
    assert "openvino backend, int8" in out.err  # the int8 export is now the default
    answers = {Path(a["path"]).name: a for a in json.loads(out.out)}
    assert answers["grey.png"]["top"]  # every mode of photo gets an answer
    photo = photos / "cat" / "0.jpg"
    with TestClient(create_app(ServeSettings(run=str(run)))) as client:
        r = client.post("/v1/predict", files=[("file", (photo.name, photo.read_bytes(),
                                                        "image/jpeg"))])
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["model"]["backend"] == "openvino-int8"
    assert body["predictions"][0]["top"][0]["class"] == answers["0.jpg"]["top"][0]["class"]
