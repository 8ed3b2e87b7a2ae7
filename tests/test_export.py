"""Inference optimisation and export: the same outputs from every path."""

import json

import numpy as np
import pytest
import torch

from vggnet.cli import main
from vggnet.training.config import resolve
from vggnet.training.loop import train
from vggnet.export.formats import export_onnx
from vggnet.inference.engine import optimize_for_inference
from vggnet.models import create_model

from helpers import with_bn_stats

SMALL = dict(width=0.125, fc_dim=64, num_classes=10)


@pytest.mark.parametrize("name", ["vgg11_bn", "vgg16_c_bn", "vgg11_lrn_bn", "vgg19", "vgg_speed"])
def test_folding_batchnorm_keeps_outputs(name):
    model = with_bn_stats(create_model(name, **SMALL))
    had_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), model(x),
                              atol=1e-5, rtol=1e-4)
    # the original is untouched
    assert had_bn == (name.endswith("_bn") or name == "vgg_speed")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == had_bn


@pytest.mark.parametrize("head", ["classifier", "conv", "linear"])
def test_onnx_export_runs_in_onnxruntime_with_any_batch(tmp_path, head):
    _assert_onnxruntime_matches(with_bn_stats(create_model("vgg11_bn", head=head, **SMALL)),
                                tmp_path, batch=5)


def test_the_onnx_exporter_says_nothing_and_leaves_the_loggers_as_they_were(tmp_path, caplog):
    """onnxscript's optimizer logs every pass at INFO: quiet while vggnet exports, and the
    levels a program set for those loggers are theirs again afterwards."""
    import logging

    logging.getLogger("onnxscript").setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.INFO):
            export_onnx(create_model("vgg11", **SMALL), tmp_path / "m.onnx", input_size=32,
                        check=False)
        assert not [r for r in caplog.records if r.name.startswith(("onnxscript", "onnx_ir"))]
        assert logging.getLogger("onnxscript").level == logging.DEBUG
        assert logging.getLogger("onnx_ir").level == logging.NOTSET
    finally:
        logging.getLogger("onnxscript").setLevel(logging.NOTSET)


def _assert_onnxruntime_matches(model, tmp_path, batch):
    ort = pytest.importorskip("onnxruntime")
    import warnings

    import onnx

    with warnings.catch_warnings():
        # the TorchScript-based exporter warns that it is deprecated: it is not the one used
        warnings.filterwarnings("error", message=".*TorchScript", category=DeprecationWarning)
        path = export_onnx(model, tmp_path / "m.onnx", input_size=32)
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 18
    # torch.export's exporter records where each node came from; TorchScript's does not
    assert any(p.key == "namespace" for n in graph.graph.node for p in n.metadata_props)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, 32, 32)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.inference_mode():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


def test_onnx_export_of_the_speed_network(tmp_path):
    """GELU, a whitening layer, pooling before batch norm, a max-pool head and scaled logits."""
    model = create_model("vgg_speed", num_classes=10)
    model.init_whitening(torch.randn(16, 3, 32, 32))
    _assert_onnxruntime_matches(with_bn_stats(model), tmp_path, batch=3)


@pytest.mark.parametrize("name, head", [("vgg13_bn", "classifier"), ("vgg11_lrn", "linear"),
                                        ("vgg_speed", "linear")])
def test_torch_export_round_trip_with_any_batch(tmp_path, name, head):
    """torch.export's program, saved and loaded again, answers as the model at any batch
    size (the batch axis is dynamic), with no TorchScript anywhere."""
    from vggnet.export.pt2 import export_pt2
    from vggnet.inference.pt2 import ExportedClassifier

    model = with_bn_stats(create_model(name, head=head, **SMALL)).eval()
    path = export_pt2(model, tmp_path / "m.pt2", input_size=32)
    loaded = ExportedClassifier(path)
    with torch.inference_mode():
        for n in (1, 3, 17):
            x = torch.randn(n, 3, 32, 32)
            assert torch.allclose(loaded(x), model(x), atol=1e-5)


@pytest.mark.slow(reason="AOTInductor compiles C++ for the model (about 30 s)")
def test_aotinductor_package_round_trip(tmp_path):
    from vggnet.export.pt2 import export_aoti
    from vggnet.inference.pt2 import AotiClassifier

    model = with_bn_stats(create_model("vgg11_bn", **SMALL)).eval()
    path = export_aoti(model, tmp_path / "m.aoti.pt2", input_size=32)
    loaded = AotiClassifier(path)
    with torch.inference_mode():
        for n in (1, 5):
            x = torch.randn(n, 3, 32, 32)
            assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_export_cli_from_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    train(resolve(None, dict(data="digits", width=0.125, epochs=1, flip=False, progress=False,
                             out=str(out))))
    assert main(["export", str(out), "--format", "onnx", "--out", str(tmp_path / "d.onnx")]) == 0
    assert "checked against ONNX Runtime" in capsys.readouterr().out
    assert main(["export", str(out), "--format", "pt2"]) == 0
    assert (out / "best.pt2").is_file()
    assert "checked against PyTorch" in capsys.readouterr().out


def test_int8_export_calibrates_on_the_runs_images_and_agrees(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    train(resolve(None, dict(data="digits", width=0.25, epochs=3, flip=False, progress=False,
                             out=str(out))))
    assert main(["export", str(out), "--out", str(tmp_path / "m.onnx"), "--int8",
                 "--calibration", "64", "--check-images", "200"]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "m.int8.onnx").is_file()
    agree = float(text.split("agrees with fp32 on ")[1].split("%")[0])
    assert "calibrated on 64 training images" in text and agree >= 95.0
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # 7-bit weights by default: full-range int8 saturates in ONNX Runtime on CPUs without VNNI
    assert _int8_weight_range(tmp_path / "m.int8.onnx") <= 64
    assert main(["export", str(out), "--out", str(tmp_path / "f.onnx"), "--int8",
                 "--int8-full-range", "--calibration", "64", "--check-images", "50"]) == 0
    assert _int8_weight_range(tmp_path / "f.int8.onnx") == 127
    assert main(["export", str(out), "--int8-full-range"]) == 2  # without --int8: one line


def _int8_weight_range(path) -> int:
    """The largest |value| among a model's int8 initializers (the quantized weights)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    ints = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
            if t.data_type == onnx.TensorProto.INT8]
    assert ints
    return int(max(np.abs(a.astype(np.int16)).max() for a in ints))


def test_predict_with_the_int8_onnx_model(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    import logging

    import vggnet.predict
    from helpers import write_image

    out = tmp_path / "run"
    train(resolve(None, dict(data="digits", width=0.25, epochs=2, flip=False, progress=False,
                             out=str(out))))
    root = logging.getLogger()
    level, filters = root.level, list(root.filters)
    assert main(["export", str(out), "--int8", "--calibration", "32", "--check-images", "50"]) == 0
    # quantizing leaves the process's logging as it was (it used to lower the root logger)
    assert root.level == level and root.filters == filters
    int8 = out / "best.int8.onnx"
    assert int8.is_file()
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", "L", size=(20 + i, 30), seed=i)
    capsys.readouterr()
    # with --onnx the PyTorch weights are never loaded: the checkpoint gives names and
    # preprocessing only
    with monkeypatch.context() as m:
        m.setattr(vggnet.predict, "load_checkpoint", lambda *a, **k: pytest.fail("loaded torch"))
        assert main(["predict", str(out), str(tmp_path / "imgs"), "--onnx", str(int8),
                     "--json"]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    assert main(["predict", str(out), str(tmp_path / "imgs"), "--json"]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert len(onnx_out) == 3
    for a, b in zip(onnx_out, torch_out):
        assert abs(sum(t["probability"] for t in a["top"]) - sum(t["probability"] for t in b["top"])) < 0.2
    assert main(["predict", str(out), str(tmp_path / "imgs"), "--onnx", str(tmp_path / "no.onnx")]) == 2


def test_onnx_export_lets_the_tracers_warnings_through(tmp_path):
    """Only the exporter's own deprecation notice is silenced; a warning raised while the
    model is traced (here by a hook, as a TracerWarning would be) reaches the user."""
    pytest.importorskip("onnxruntime")
    import warnings

    model = create_model("vgg11", **SMALL)
    model.features.register_forward_hook(
        lambda *_: warnings.warn("probe from the traced model", UserWarning))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model, tmp_path / "m.onnx", input_size=32)
    messages = [str(w.message) for w in caught]
    assert any("probe from the traced model" in m for m in messages)
    assert not any("legacy TorchScript-based ONNX export" in m for m in messages)


def test_export_checks_scale_with_the_logits_and_still_catch_a_broken_file(tmp_path):
    """Large logits (an untrained or sharply trained net) carry proportionally larger fp32
    rounding between runtimes: the check is relative to their scale, so such a model exports,
    while a file whose weights were changed is still refused."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from vggnet.errors import ExportError
    from vggnet.export.formats import export_onnx

    model = create_model("vgg11_bn", **SMALL).eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(1e4)  # logits in the thousands
    export_onnx(model, tmp_path / "big.onnx", 32)  # passes its check
    m = onnx.load(str(tmp_path / "big.onnx"))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(tmp_path / "broken.onnx"))
    from vggnet.export.formats import _check_close, onnx_outputs

    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        _check_close(onnx_outputs(tmp_path / "broken.onnx", x), ref, 1e-4, "broken.onnx",
                     "ONNX Runtime")


# The shapes of the packaged recipes' runs: the image as decoded, the training scales and
# crop, the head. A run whose crop is smaller than its decoded images (scale jittering,
# imagenette_quick and every fine-tune of it) must export, quantize and predict as well as
# one trained on whole images.
RECIPE_SHAPES = {
    "whole_images": dict(image_size=32, crop_padding=2),
    "jittered_crop": dict(image_size=48, scale=32, scale_max=48, crop_size=32, crop_padding=0,
                          tta=True),
    "jittered_fc_head": dict(image_size=48, scale=40, crop_size=32, crop_padding=0,
                             head="classifier", fc_dim=32),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of images of mixed sizes, train/ and val/."""
    from helpers import write_image

    root = tmp_path_factory.mktemp("shapes") / "data"
    for split, n in (("train", 16), ("val", 6)):
        for c, name in enumerate(("a", "b")):
            for i in range(n):
                write_image(root / split / name / f"{i}.png", size=(40 + 9 * (i % 4), 56),
                            seed=100 * c + i)
    return root


def _train_shape(folder, out, shape: dict, **extra):
    train(resolve(None, dict(data=str(folder), width=0.125, epochs=1, progress=False,
                             out=str(out), **shape, **extra)))
    return out


@pytest.mark.parametrize("shape", sorted(RECIPE_SHAPES))
def test_every_recipe_shape_exports_in_every_format_and_predicts(shape, folder, tmp_path,
                                                                 capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import vggnet.export.quantize as quantize
    from vggnet.run import read_run_metadata

    base = _train_shape(folder, tmp_path / "base", RECIPE_SHAPES[shape])
    # and a fine-tune of it: architecture and preprocessing lent by the run
    run = tmp_path / "tuned"
    train(resolve(None, dict(data=str(folder), weights=str(base), epochs=1, progress=False,
                             out=str(run))))
    pre = read_run_metadata(run).preprocessing
    assert pre.input_size == RECIPE_SHAPES[shape].get("crop_size", 32)
    seen = []
    real = quantize.compare_int8

    def spy(model, engine, images, *a, **k):
        seen.append(tuple(images.shape[-2:]))
        return real(model, engine, images, *a, **k)

    monkeypatch.setattr(quantize, "compare_int8", spy)
    for fmt in ("onnx", "openvino"):
        assert main(["export", str(run), "--format", fmt, "--int8", "--calibration", "8",
                     "--check-images", "12"]) == 0, fmt
    assert main(["export", str(run), "--format", "pt2"]) == 0
    text = capsys.readouterr().out
    # the agreement is measured on what `predict` feeds: the test scale's centre crop
    assert seen == [(pre.input_size, pre.input_size)] * 2
    assert text.count("agrees with fp32 on") == 2
    images = sorted((folder / "val" / "a").glob("*.png"))[:3]
    answers = {}
    for backend in ("torch", "onnx", "int8", "openvino", "openvino-int8", "pt2", "auto"):
        assert main(["predict", str(run), *map(str, images), "--backend", backend,
                     "--precision", "fp32" if backend in ("torch", "openvino", "pt2") else "auto",
                     "--json"]) == 0, backend
        answers[backend] = json.loads(capsys.readouterr().out)
        assert [len(a["top"]) for a in answers[backend]] == [2, 2, 2], backend
    for backend in ("onnx", "openvino", "pt2"):  # the fp32 files answer as PyTorch does
        for a, b in zip(answers[backend], answers["torch"]):
            assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"],
                                                               abs=1e-3)
