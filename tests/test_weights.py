"""Weights files and state dicts on their own (small models, no download): every wrapper and
prefix that training scripts add is removed, formats are told apart by their names,
torchvision's and timm's numbering maps onto vggnet's names and back, and every file that is
not weights is a one-line error that says what to do."""

import json
import pickle

import pytest
import torch

from vggnet.errors import WeightsError
from vggnet.models import create_model
from vggnet.models.weights import (detect_format, read_metadata, read_state_dict, save_weights,
                                   to_torchvision_state_dict, to_vggnet_state_dict)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("vgg11_bn", num_classes=5, width=0.125).eval()


def test_wrappers_and_prefixes_are_removed_and_metadata_dropped(model):
    sd = model.state_dict()
    assert read_state_dict(model).keys() == sd.keys()
    for key in ("state_dict", "model", "model_state", "model_state_dict", "weights"):
        wrapped = {key: {f"module._orig_mod.module.{k}": v for k, v in sd.items()},
                   "epoch": 3}
        got = read_state_dict(wrapped)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    with_meta = {**sd, "epoch": 7, "arch": "vgg11"}
    assert read_state_dict(with_meta).keys() == sd.keys()
    assert read_state_dict({"model": "not a mapping", "w": torch.ones(1)}) == {"w": torch.ones(1)}
    with pytest.raises(WeightsError, match="the weights hold no tensors"):
        read_state_dict({"epoch": 1})


def test_files_are_read_as_tensors_only(tmp_path, model):
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": model.state_dict()}, pth)
    assert read_state_dict(pth).keys() == model.state_dict().keys()
    st = save_weights(model, tmp_path / "w.safetensors")
    got = read_state_dict(str(st))
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_files_that_are_not_weights_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match=f"^weights file not found: {tmp_path / 'none.pth'}$"):
        read_state_dict(tmp_path / "none.pth")
    empty = tmp_path / "e.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="e.pth is empty \\(0 bytes\\)"):
        read_state_dict(empty)
    bad_st = tmp_path / "b.safetensors"
    bad_st.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{notjson")
    with pytest.raises(WeightsError, match="b.safetensors is not a readable safetensors file"):
        read_state_dict(bad_st)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f, protocol=2)
    with pytest.raises(WeightsError) as info:
        read_state_dict(evil)
    message = str(info.value)
    assert message.startswith(f"refused to load {evil}: it holds Python objects other than tensors")
    assert "\n" not in message and "safetensors" in message
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match="junk.pth is not a readable PyTorch weights file"):
        read_state_dict(junk)


def test_formats_are_told_apart_by_their_names():
    t = torch.zeros(1)
    assert detect_format({"features.conv1_1.weight": t}) == "vggnet"
    assert detect_format({"features.0.weight": t, "classifier.0.weight": t}) == "torchvision"
    assert detect_format({"features.0.weight": t, "pre_logits.fc1.weight": t}) == "timm"
    assert detect_format({"features.0.weight": t, "head.fc.weight": t}) == "timm"
    assert detect_format({"features.0.weight": t}) == "torchvision"
    with pytest.raises(WeightsError, match="cannot tell the format .*'fc.weight'"):
        detect_format({"fc.weight": t, "conv.weight": t})
    with pytest.raises(WeightsError):
        detect_format({"head.fc.weight": t})  # a head without numbered features


def test_torchvision_names_go_both_ways(model):
    tv = to_torchvision_state_dict(model)
    names = [n for n, _ in model.features.named_children()]
    assert tv["features.0.weight"].shape == model.features.conv1_1.weight.shape
    i = names.index("bn1_1")
    assert torch.equal(tv[f"features.{i}.running_mean"], model.features.bn1_1.running_mean)
    assert tv["classifier.0.weight"].dim() == 2  # fc6 as torchvision's Linear
    assert tv["classifier.6.weight"].shape[0] == 5
    assert tv["classifier.3.bias"].shape == model.head.fc7.bias.shape
    back = to_vggnet_state_dict(tv, model)
    sd = model.state_dict()
    assert back.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(back[k].reshape(v.shape), v), k
    tv["features.0.weight"].add_(1)  # a copy, not the model's own tensors
    assert not torch.equal(model.features.conv1_1.weight, tv["features.0.weight"])
    assert to_vggnet_state_dict(sd, model) == dict(sd)


def test_a_convolutional_heads_weights_become_torchvisions_linear_layers():
    conv = create_model("vgg11", num_classes=5, width=0.125, head="conv").eval()
    assert conv.head.fc6.weight.dim() == 4
    tv = to_torchvision_state_dict(conv)
    for tv_name, layer in (("classifier.0", "fc6"), ("classifier.3", "fc7"), ("classifier.6", "fc8")):
        w = getattr(conv.head, layer).weight
        assert tv[f"{tv_name}.weight"].shape == (w.shape[0], w[0].numel())
        assert torch.equal(tv[f"{tv_name}.weight"], w.reshape(w.shape[0], -1))
        assert tv[f"{tv_name}.bias"].dim() == 1


def test_timm_names_map_onto_vggnet_names(model):
    tv = to_torchvision_state_dict(model)
    timm = {k.replace("classifier.0", "pre_logits.fc1").replace("classifier.3", "pre_logits.fc2")
            .replace("classifier.6", "head.fc"): v for k, v in tv.items()}
    out = to_vggnet_state_dict(timm, model)
    assert out.keys() == model.state_dict().keys()
    assert torch.equal(out["head.fc8.weight"], tv["classifier.6.weight"])
    assert torch.equal(out["head.fc6.bias"], tv["classifier.0.bias"])


def test_layers_the_model_does_not_have_keep_a_name_that_says_so(model):
    n = len(list(model.features.children()))
    out = to_vggnet_state_dict({f"features.{n + 3}.weight": torch.zeros(1),
                                "features.0.weight": torch.zeros(1)}, model, fmt="torchvision")
    assert set(out) == {f"features.#{n + 3}.weight", "features.conv1_1.weight"}


def test_a_linear_head_has_no_torchvision_form():
    linear = create_model("vgg11", num_classes=5, width=0.125, head="linear")
    with pytest.raises(WeightsError, match="'linear' head has no torchvision equivalent"):
        to_torchvision_state_dict(linear)


def test_saved_weights_carry_their_config_and_metadata(tmp_path, model):
    from vggnet.models.normalization import InputNorm

    path = save_weights(model, tmp_path / "m.safetensors",
                        extra_metadata={"classes": ["a", "b"], "note": "plain text", "n": 3})
    assert path == tmp_path / "m.safetensors"
    meta = read_metadata(path)
    assert meta["format"] == "vggnet" and meta["model_config"] == model.model_config
    assert meta["classes"] == ["a", "b"] and meta["note"] == "plain text" and meta["n"] == 3
    assert meta["input_norm"] == json.loads(json.dumps(model.input_norm.to_dict()))
    model.input_norm, kept = None, model.input_norm
    try:
        assert "input_norm" not in read_metadata(save_weights(model, tmp_path / "p.safetensors"))
    finally:
        model.input_norm = kept
    normed = create_model("vgg11", num_classes=5, width=0.125)
    normed.input_norm = InputNorm((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    class Compiled:
        _orig_mod = normed

    meta = read_metadata(save_weights(Compiled(), tmp_path / "n.safetensors"))
    assert meta["input_norm"] == json.loads(json.dumps(normed.input_norm.to_dict()))
    assert meta["model_config"] == normed.model_config


def test_a_keras_file_is_read_and_renamed(tmp_path):
    """A Keras HDF5 file of VGG weights reads as vggnet's names (the kernels transposed to
    PyTorch's layout)."""
    h5py = pytest.importorskip("h5py")
    import numpy as np

    from helpers import keras_legacy_file

    path = keras_legacy_file(tmp_path / "vgg16_notop.h5")
    sd = read_state_dict(path)
    assert len(sd) == 26 and all(k.startswith("features.conv") for k in sd)
    with h5py.File(path) as f:
        kernel = np.asarray(f["block3_conv2"]["block3_conv2_W_1:0"])
    assert torch.equal(sd["features.conv3_2.weight"],
                       torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))


def test_numbered_layers_past_the_models_and_unknown_head_layers_keep_their_names(model):
    n = len(list(model.features.children()))
    out = to_vggnet_state_dict({f"features.{n}.weight": torch.zeros(1),
                                "classifier.9.weight": torch.zeros(1),
                                "classifier.6.bias": torch.zeros(1)}, model, fmt="torchvision")
    assert set(out) == {f"features.#{n}.weight", "classifier.9.weight", "head.fc8.bias"}


# --- building a model from weights: no initialisation is wasted, none is missed ---------------


def test_a_model_built_from_weights_initialises_only_what_they_leave_out(model):
    """create_model(weights=...) builds without random numbers and loads: the weights' tensors
    arrive exactly and every layer they leave out gets the model's initialisation, not
    whatever the memory held."""
    sd = model.state_dict()
    torch.manual_seed(1)
    for init, check in [("kaiming", lambda w: abs(w.std().item() - 0.01) < 0.002),
                        ("xavier", lambda w: w.abs().max().item()
                         <= (6 / sum(w.shape[:2])) ** 0.5 and w.std().item() > 0)]:
        # another number of classes: the logits layer is made afresh, fc6 and fc7 loaded
        again = create_model("vgg11_bn", num_classes=7, width=0.125, init=init,
                             head="classifier", fc_dim=sd["head.fc6.weight"].shape[0],
                             weights=sd)
        got = again.state_dict()
        for key, value in sd.items():
            if not key.startswith("head.fc8."):
                assert torch.equal(got[key], value), key
        assert check(got["head.fc8.weight"]), (init, got["head.fc8.weight"].std())
        assert torch.equal(got["head.fc8.bias"], torch.zeros(7))


def test_weights_without_batch_norm_step_counters_load_as_pytorch_loads_them(model):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked: they load, with the
    counters at 0 as PyTorch's own load_state_dict leaves them."""
    sd = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    again = create_model("vgg11_bn", num_classes=5, width=0.125, weights=sd)
    for key, value in again.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == 0, key
        else:
            assert torch.equal(value, sd[key]), key
    from vggnet.models.factory import infer_architecture
    assert infer_architecture(sd) == "vgg11_bn (width 0.125)"
