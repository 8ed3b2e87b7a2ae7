"""vggnet.run on its own: what travels with a run's weights (preprocessing, classes, configs,
versions) goes into a checkpoint and comes back unchanged; a checkpoint alone rebuilds its
model; paths a run recorded are found from any directory; every file that is not a vggnet
checkpoint is a one-line error naming it; a run's own images come back as it saw them."""

import json

import numpy as np
from pathlib import Path

import pytest
import torch

from vggnet import run as run_module
from vggnet.errors import DataError, WeightsError
from vggnet.models import create_model
from vggnet.run import (Preprocessing, RunMetadata, absolute_path, load_checkpoint, open_run_data,
                        read_run_metadata, resolve_checkpoint, save_checkpoint, usable_path)


def test_preprocessing_defaults_and_round_trip():
    p = Preprocessing()
    assert p.input_size == 224 and p.test_scale == 224 and p.channels == 3
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    q = Preprocessing(mean=[1, 2, 3], std=(1, 1, 1), input_size=32, test_scale=40)
    assert q.mean == (1.0, 2.0, 3.0) and all(type(v) is float for v in q.mean + q.std)
    d = q.to_dict()
    assert d["mean"] == [1.0, 2.0, 3.0] and d["std"] == [1.0, 1.0, 1.0]
    assert d["input_size"] == 32 and d["test_scale"] == 40 and d["channels"] == 3
    assert Preprocessing.from_dict(json.loads(json.dumps(d))) == q
    assert Preprocessing.from_dict({"input_size": 64, "unknown": 1}) == Preprocessing(input_size=64)
    assert Preprocessing.from_dict(None) == Preprocessing()
    grey = Preprocessing.from_dict({"channels": 1, "resize": "whole image", "mean": [0.5],
                                    "std": [0.25]})
    assert grey.channels == 1 and grey.resize == "whole image" and grey.mean == (0.5,)


def test_the_view_is_the_resize_and_centre_crop_of_prediction():
    from PIL import Image

    from vggnet.io import resize_center_crop

    x = torch.zeros(1, 3, 40, 60, dtype=torch.uint8)
    x[..., :, 25:35] = 255  # a bright band in the middle
    view = Preprocessing(input_size=16, test_scale=20).view(x)
    assert view.shape == (1, 3, 16, 16) and view.dtype == torch.uint8
    pil = resize_center_crop(Image.fromarray(x[0].permute(1, 2, 0).numpy()), 20, 16)
    want = torch.tensor(np.asarray(pil)).permute(2, 0, 1).int()
    assert (view[0].int() - want).abs().max() <= 2
    assert Preprocessing(input_size=40).view(x).shape == (1, 3, 40, 40)


def test_metadata_round_trip_and_defaults():
    meta = RunMetadata(classes=["a", "b"], preprocessing=Preprocessing(input_size=32),
                       model_config={"name": "vgg11", "num_classes": 2}, config={"lr": 0.1},
                       data={"source": "x"}, epoch=3, metrics={"top1": 50.0},
                       compute={"device": "cpu"}, git_commit="abc")
    d = json.loads(json.dumps(meta.to_dict()))
    back = RunMetadata.from_dict(d)
    assert back == meta
    assert set(d) == {"model_config", "classes", "preprocessing", "data", "config", "versions",
                      "git_commit", "epoch", "metrics", "compute"}
    assert meta.versions["torch"] == torch.__version__ and "vggnet" in meta.versions
    assert RunMetadata.from_dict({**d, "versions": {"torch": "1.0"}}).versions == {"torch": "1.0"}
    bare = RunMetadata.from_dict({"model_config": {"num_classes": 3}})
    assert bare.classes == ["0", "1", "2"] and bare.preprocessing == Preprocessing()
    assert bare.epoch is None and bare.config == {} and bare.metrics == {} and bare.compute == {}
    assert RunMetadata.from_dict({}).classes == []


def test_git_commit_is_the_checkouts_head_or_none(monkeypatch):
    """A run records the commit of the vggnet it ran (git rev-parse HEAD where the package
    lives); None, never an error, where that cannot be known."""
    import subprocess

    src = Path(run_module.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True)
    if head.returncode == 0:
        assert run_module.git_commit() == head.stdout.strip()
    calls = []

    def answer(code, out=""):
        def run(cmd, **kw):
            calls.append((cmd, kw))
            return subprocess.CompletedProcess(cmd, code, out, "")
        return run

    monkeypatch.setattr(run_module.subprocess, "run", answer(0, "f" * 40 + "\n"))
    assert run_module.git_commit() == "f" * 40
    cmd, kw = calls[-1]
    assert cmd == ["git", "rev-parse", "HEAD"] and kw["cwd"] == src and 0 < kw["timeout"] <= 10
    assert kw["capture_output"] and kw["text"]
    monkeypatch.setattr(run_module.subprocess, "run", answer(128, "f" * 40))  # not a checkout
    assert run_module.git_commit() is None
    monkeypatch.setattr(run_module.subprocess, "run", answer(0, "\n"))
    assert run_module.git_commit() is None

    for error in (OSError("no git"), subprocess.TimeoutExpired("git", 5)):
        def broken(*a, error=error, **k):
            raise error

        monkeypatch.setattr(run_module.subprocess, "run", broken)
        assert run_module.git_commit() is None


def test_recorded_paths_are_found_from_any_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert absolute_path("data") == str((tmp_path / "data").resolve())
    assert absolute_path("missing") is None and absolute_path(None) is None
    assert absolute_path("") is None
    assert usable_path("data", "/elsewhere") == "data"  # works from here: as given
    monkeypatch.chdir(tmp_path / "data")
    assert usable_path("data", str(tmp_path / "data")) == str(tmp_path / "data")
    assert usable_path("data", "/no/such/place") == "data"  # neither works: as recorded
    assert usable_path("data", None) == "data" and usable_path(None, "/x") is None
    meta = RunMetadata(classes=[], preprocessing=Preprocessing(),
                       config={"data": "data", "data_root": "roots"},
                       data={"source_path": str(tmp_path / "data"), "root": str(tmp_path)})
    assert meta.data_source == str(tmp_path / "data") and meta.data_root == str(tmp_path)
    meta.config = {}
    meta.data = {"source": "cifar10", "root": str(tmp_path)}  # a built-in set
    assert meta.data_source == "cifar10" and meta.data_root is None  # the default root


def _meta(**kw):
    return RunMetadata(classes=["cat", "dog", "fox"], preprocessing=Preprocessing(
        mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7), input_size=32, test_scale=36), **kw)


def test_a_checkpoint_alone_rebuilds_its_model(tmp_path):
    model = create_model("vgg11_bn", num_classes=3, width=0.125).eval()
    path = save_checkpoint(model, tmp_path / "best.safetensors", _meta(epoch=4,
                           model_config={"ignored": True}, metrics={"top1": 66.6}))
    assert path == tmp_path / "best.safetensors"
    readable = json.loads((tmp_path / "best.json").read_text())
    assert readable["model_config"] == model.model_config and readable["epoch"] == 4
    back, meta = load_checkpoint(tmp_path)
    assert meta.classes == ["cat", "dog", "fox"] and meta.epoch == 4
    assert meta.model_config == model.model_config and meta.metrics == {"top1": 66.6}
    assert not back.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back.state_dict()["features.conv1_1.weight"],
                       model.state_dict()["features.conv1_1.weight"])
    # features on the run's model see its own data's statistics
    assert back.input_norm.mean == pytest.approx((0.1, 0.2, 0.3))
    assert back.input_norm.std == pytest.approx((0.5, 0.6, 0.7))
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), atol=1e-6)
    assert read_run_metadata(tmp_path / "best.safetensors") == meta
    save_checkpoint(model, tmp_path / "last.safetensors", _meta(epoch=5))
    assert read_run_metadata(tmp_path, which="last").epoch == 5
    assert read_run_metadata(tmp_path).epoch == 4


def test_a_compiled_model_is_saved_as_the_model_it_wraps(tmp_path):
    model = create_model("vgg11", num_classes=3, width=0.125)

    class Wrapper:  # what torch.compile returns keeps the model as _orig_mod
        _orig_mod = model

    save_checkpoint(Wrapper(), tmp_path / "last.safetensors", _meta())
    assert read_run_metadata(tmp_path, which="last").model_config == model.model_config


def test_run_directories_give_their_best_then_their_last_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="holds no checkpoint .* a vggnet run directory"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(WeightsError, match=f"^checkpoint not found: {tmp_path / 'x'}$"):
        resolve_checkpoint(tmp_path / "x")
    (tmp_path / "last.safetensors").write_bytes(b"l")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.safetensors"
    (tmp_path / "best.safetensors").write_bytes(b"b")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.safetensors"
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "last.safetensors"
    assert resolve_checkpoint(tmp_path, "other") == tmp_path / "best.safetensors"
    assert resolve_checkpoint(tmp_path / "last.safetensors") == tmp_path / "last.safetensors"


def test_files_that_are_not_vggnet_checkpoints_are_named(tmp_path):
    pth = tmp_path / "w.pth"
    pth.write_bytes(b"x")
    with pytest.raises(WeightsError, match="w.pth: vggnet checkpoints are .safetensors files"):
        read_run_metadata(pth)
    broken = tmp_path / "b.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="b.safetensors is not a readable safetensors file"):
        read_run_metadata(broken)
    from safetensors.torch import save_file

    plain = tmp_path / "p.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="p.safetensors carries no vggnet model config"):
        read_run_metadata(plain)


def _data_folder(root, classes=("cat", "dog", "fox"), size=(48, 40)):
    from helpers import make_folder_dataset

    return make_folder_dataset(root, classes=classes, per_class=4, sizes=(size,))


def test_a_runs_own_images_come_back_as_it_saw_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    folder = _data_folder(tmp_path / "photos")
    meta = _meta(config={"data": str(folder), "image_size": 40, "val_fraction": 0.25,
                         "seed": 0})
    test = open_run_data(meta)
    train = open_run_data(meta, "train")
    assert len(test) == 3 and len(train) == 9 and test.classes == meta.classes
    assert test.images.shape[-2:] == (40, 40)
    assert len(open_run_data(meta, "train", n=3)) == 3
    some = open_run_data(meta, "train", n=3, seed=5)  # a seeded, stratified subset
    assert torch.equal(some.images, open_run_data(meta, "train", n=3, seed=5).images)
    assert sorted(some.labels.tolist()) == [0, 1, 2]
    assert any(not torch.equal(some.images, open_run_data(meta, "train", n=3, seed=s).images)
               for s in (6, 7, 8))
    seen = open_run_data(meta, as_input=True)  # test scale 36, crop 32: what predict sees
    assert seen.images.shape[-2:] == (32, 32) and seen.classes == meta.classes
    assert torch.equal(seen.images, meta.preprocessing.view(test.images))
    assert torch.equal(seen.labels, test.labels)
    other = _data_folder(tmp_path / "other", size=(20, 20))
    assert open_run_data(meta, data=str(other), image_size=20).images.shape[-2:] == (20, 20)


def test_a_run_without_its_data_or_with_other_classes_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no data set recorded in the checkpoint: pass --data"):
        open_run_data(_meta())
    other = _data_folder(tmp_path / "other", classes=("ant", "bee", "cow"))
    with pytest.raises(DataError, match="differ from the checkpoint's"):
        open_run_data(_meta(config={"image_size": 40}), data=str(other), image_size=40)


def test_a_streamed_runs_images_are_decoded_one_by_one_as_it_saw_them(tmp_path):
    from helpers import make_folder_dataset

    tree = tmp_path / "big"
    make_folder_dataset(tree / "train", classes=("cat", "dog", "fox"), per_class=3,
                        sizes=((60, 48),))
    make_folder_dataset(tree / "val", classes=("cat", "dog", "fox"), per_class=2,
                        sizes=((60, 48),))
    (tree / "val" / "dog" / "broken.png").write_bytes(b"not an image")  # skipped
    meta = _meta(config={"data": str(tree), "stream": True})
    test = open_run_data(meta)
    assert len(test) == 6 and test.images.shape == (6, 3, 32, 32)
    assert test.images.dtype == torch.uint8 and test.classes == ["cat", "dog", "fox"]
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    some = open_run_data(meta, "train", n=4, seed=5)
    assert len(some) == 4 and torch.equal(some.images, open_run_data(meta, "train", n=4,
                                                                      seed=5).images)
    assert not torch.equal(some.labels, open_run_data(meta, "train", n=4, seed=6).labels) or \
        not torch.equal(some.images, open_run_data(meta, "train", n=4, seed=6).images)
    assert len(open_run_data(meta, "train")) == 9
    # what prediction sees: shorter side to the test scale (36), the centre 32 px
    from PIL import Image

    from vggnet.io import resize_center_crop

    first = sorted((tree / "val" / "cat").glob("*.png"))[0]
    want = np.asarray(resize_center_crop(Image.open(first).convert("RGB"), 36, 32))
    got = [img for img, label in zip(test.images, test.labels) if label == 0]
    assert min(int((g.permute(1, 2, 0).int() - torch.from_numpy(want.copy()).int()).abs().max())
               for g in got) <= 2


def test_a_runs_split_and_data_root_are_the_ones_it_recorded(tmp_path, monkeypatch):
    """A folder split by a fraction comes back with the run's own fraction and seed, and a
    built-in set from the run's --data-root (or from one given now)."""
    from helpers import make_folder_dataset
    from vggnet.data import load_splits

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    folder = make_folder_dataset(tmp_path / "photos", classes=("cat", "dog", "fox"),
                                 per_class=8, sizes=((40, 40),))
    meta = _meta(config={"data": str(folder), "image_size": 40, "val_fraction": 0.5,
                         "seed": 7})
    test = open_run_data(meta)
    _, want = load_splits(str(folder), image_size=40, val_fraction=0.5, seed=7)
    assert len(test) == 12 and torch.equal(test.images, want.images)
    assert torch.equal(test.labels, want.labels)
    _, other_seed = load_splits(str(folder), image_size=40, val_fraction=0.5, seed=0)
    assert not torch.equal(test.images, other_seed.images)

    root = tmp_path / "datasets"
    for split in ("train", "test"):
        make_folder_dataset(root / "cifar10" / split, classes=("cat", "dog", "fox"),
                            per_class=2, sizes=((32, 32),))
    cifar = _meta(config={"data": "cifar10", "data_root": str(root)})
    assert len(open_run_data(cifar)) == 6
    elsewhere = _meta(config={"data": "cifar10", "data_root": str(tmp_path / "gone")})
    assert len(open_run_data(elsewhere, data_root=str(root))) == 6


def test_a_checkpoint_whose_head_does_not_fit_its_config_is_refused(tmp_path):
    """A checkpoint is loaded exactly as it was saved: a head that does not fit the recorded
    config (a file edited or mixed up) is an error, never a fresh random head."""
    from safetensors.torch import load_file, save_file

    from vggnet.errors import WeightsError
    from vggnet.models.weights import read_metadata

    model = create_model("vgg11", num_classes=3, width=0.125).eval()
    path = save_checkpoint(model, tmp_path / "best.safetensors", _meta())
    tensors = load_file(str(path))
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in read_metadata(path).items()}
    config = json.loads(meta["model_config"])
    config["num_classes"] = 4  # the config says 4 classes, the weights have 3
    meta["model_config"] = json.dumps(config)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="head of the weights does not fit"):
        load_checkpoint(path)
