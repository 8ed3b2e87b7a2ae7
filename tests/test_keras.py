"""Keras' VGG16/VGG19 weights: parity with Keras itself (Keras 3 on its torch backend, random
weights, every file format, with and without the top), the preprocessing that comes with them,
and clear errors for files that are not what they claim."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere
h5py = pytest.importorskip("h5py")
# Keras' torch backend converts its tensors in a way numpy 2 warns about: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from vggnet.errors import WeightsError  # noqa: E402
from vggnet.models import create_model  # noqa: E402
from vggnet.models.factory import load_model  # noqa: E402
from vggnet.formats.keras import read_keras_weights as _read  # noqa: E402
from vggnet.models.normalization import CAFFE  # noqa: E402
from vggnet.models.weights import keras_layouts, save_weights  # noqa: E402

from helpers import keras_legacy_file as _legacy_file  # noqa: E402


def read_keras_weights(path):
    return _read(path, keras_layouts())


def _keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()} here; the parity test uses torch")
    return keras


def _save(model, path):
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)  # Keras 3's own weights file
    else:
        model.save(path)  # .h5: the legacy HDF5 layout of keras.applications' files; .keras
    return path


# every format, both depths, with and without the top; the top needs 224 px inputs (a small
# one: keras.applications' layer names and layout, fc1 and fc2 of 64 units and 10 classes
# instead of 4096 and 1000, so the files are 10 MB instead of 550)
CASES = [("vgg16", True, "vgg16.h5"), ("vgg19", True, "vgg19.weights.h5"),
         ("vgg16", False, "vgg16.keras"), ("vgg16", False, "vgg16.weights.h5"),
         ("vgg19", False, "vgg19.h5")]


@pytest.mark.parametrize("arch, top, filename", CASES)
def test_keras_weights_give_kerases_outputs(tmp_path, arch, top, filename):
    keras = _keras()
    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, arch.upper())
    size = 224 if top else 64
    if top:
        base = build(weights=None, include_top=False, input_shape=(size, size, 3))
        x = keras.layers.Flatten(name="flatten")(base.output)
        x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
        x = keras.layers.Dense(64, activation="relu", name="fc2")(x)
        net = keras.Model(base.input, keras.layers.Dense(10, name="predictions")(x), name=arch)
    else:
        net = build(weights=None, include_top=False, input_shape=(size, size, 3))
    path = _save(net, tmp_path / filename)
    rgb = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = np.asarray(net(keras.applications.vgg16.preprocess_input(rgb.copy())).detach()
                          .cpu())
    del net

    model = create_model(arch, weights=path, **(dict(fc_dim=64, num_classes=10) if top else {}))
    model.eval()
    assert model.input_norm == CAFFE  # BGR, 0-255, ImageNet mean, no std: Keras' "caffe"
    x = model.input_norm(torch.from_numpy(rgb).permute(0, 3, 1, 2) / 255)
    with torch.inference_mode():
        got = model(x) if top else model.forward_features(x).permute(0, 2, 3, 1)
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 1e-3  # random weights that still carry a signal to the last layer
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4 * max(1.0, scale))


def test_the_2016_download_layout_loads_and_round_trips_with_its_preprocessing(tmp_path):
    path = _legacy_file(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    sd = read_keras_weights(path)
    with h5py.File(path) as f:
        kernel = np.asarray(f["block4_conv2"]["block4_conv2_W_1:0"])
    torch.testing.assert_close(sd["features.conv4_2.weight"],
                               torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    model = create_model("vgg16", weights=path)  # no top in the file: a fresh head
    torch.testing.assert_close(model.features.conv4_2.weight, sd["features.conv4_2.weight"])
    saved = save_weights(model, tmp_path / "m.safetensors")
    assert load_model(saved).input_norm == CAFFE  # the preprocessing travels with the weights


def test_files_that_are_not_keras_vgg_weights_are_refused_with_the_reason(tmp_path):
    with pytest.raises(WeightsError, match="Theano-ordered"):
        read_keras_weights(_legacy_file(tmp_path / "th.h5", theano=True))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        create_model("vgg16", weights=tmp_path / "other.h5")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError, match="not a readable Keras weights file"):
        create_model("vgg16", weights=tmp_path / "broken.h5")
    with h5py.File(tmp_path / "resnet.weights.h5", "w") as f:
        f.create_dataset("layers/batch_normalization/vars/0", data=np.ones(4))
    with pytest.raises(WeightsError, match="only Conv2D and Dense"):
        read_keras_weights(tmp_path / "resnet.weights.h5")


def test_a_missing_h5py_is_one_line_that_says_how_to_install(tmp_path, monkeypatch):
    import sys

    path = _legacy_file(tmp_path / "w.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(WeightsError, match=r"pip install 'vggnet\[keras\]'"):
        create_model("vgg16", weights=path)


def test_training_from_keras_weights_feeds_them_what_they_expect(tmp_path):
    """The training pipeline hands RGB images in [0, 1] to its normalisation: a model with
    Keras' BGR 0-255 weights gets its first convolution reordered to RGB and the 'caffe'
    normalisation in RGB [0, 1] units, so its first layer computes what Keras' would."""
    from vggnet.models.normalization import InputNorm, take_rgb_input
    from vggnet.training.config import resolve
    from vggnet.training.setup import build_model
    from vggnet.training.transfer import parse_normalize

    path = _legacy_file(tmp_path / "vgg16_notop.h5")
    cfg = resolve(None, {"data": str(tmp_path), "weights": str(path), "model": "vgg16",
                         "head": "linear"})
    assert cfg.normalize == "caffe"  # lent by the weights, said in the log like a run's
    assert cfg.inherited["normalize"] == ("caffe", str(path))  # the file that lent it
    mean, std = parse_normalize(cfg.normalize)
    model = build_model(cfg, num_classes=3)
    assert model.input_norm == InputNorm(mean=mean, std=std)
    keras_way = create_model("vgg16", num_classes=3, head="linear", weights=path)
    assert keras_way.input_norm == CAFFE
    torch.testing.assert_close(model.features[0].weight, keras_way.features[0].weight.flip(1))
    x = torch.rand(2, 3, 32, 32)  # RGB in [0, 1], as the data pipeline has it
    pipeline = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = keras_way.features[0](CAFFE(x))
        got = model.features[0](pipeline)
    torch.testing.assert_close(got, expected, rtol=1e-5,
                               atol=1e-4 * float(expected.abs().max()))
    assert not take_rgb_input(model)  # already RGB: nothing left to do
    explicit = resolve(None, {"weights": str(path), "normalize": "imagenet"})
    assert explicit.normalize == "imagenet"  # a flag still wins
