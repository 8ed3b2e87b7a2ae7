"""Precision by CPU features and the three inference backends (PyTorch, ONNX Runtime, OpenVINO) answering the same prediction tests.

Everything that depends on the CPU is tested by replacing the detected feature flags, so these
tests mean the same on an AVX2-only machine, an AVX512-BF16 one and an AMX one."""

import logging
import sys

import pytest
import torch

from vggnet import device as dev
from vggnet.errors import UsageError
from vggnet.inference.backends import choose_backend
from vggnet.inference.engine import InferenceEngine
from vggnet.models import create_model
from vggnet.predict import Predictor

from helpers import train_tiny_run, with_bn_stats

SMALL = dict(width=0.125, fc_dim=64, num_classes=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("backends") / "run")


# --- precision: auto by the CPU's features ----------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    (("avx2", "fma"), "fp32"),                          # AVX2 only: bf16 would be emulated
    (("avx512f", "avx512bw"), "fp32"),                  # AVX-512 without BF16
    (("avx512f", "avx512_bf16"), "bf16"),               # AMD EPYC Zen 4/5, Cooper Lake
    (("avx512f", "amx_tile", "amx_bf16"), "bf16"),      # Sapphire Rapids and later
])
def test_auto_precision_follows_the_cpu_features(cpu, flags, expected):
    cpu(*flags)
    assert dev.resolve_precision("cpu", "auto") == expected
    assert dev.uses_bf16(torch.device("cpu"), "auto") == (expected == "bf16")
    for asked in ("fp32", "bf16"):  # an explicit choice is kept on every CPU
        assert dev.resolve_precision("cpu", asked) == asked
    line = dev.describe_precision("cpu", "auto")
    assert line.startswith(expected) and "auto" in line
    if expected == "bf16":
        assert ("amx_bf16" if "amx_bf16" in flags else "avx512_bf16") in line


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(Exception, match="auto, fp32, bf16"):
        dev.resolve_precision("cpu", "fp16")


@pytest.mark.parametrize("flags, expected", [(("avx2",), "fp32"), (("avx512_bf16",), "bf16")])
def test_training_records_and_logs_the_precision_it_ran(tmp_path, cpu, caplog, flags, expected):
    from vggnet.run import read_run_metadata

    cpu(*flags)
    with caplog.at_level(logging.INFO, logger="vggnet"):
        train_tiny_run(tmp_path / "run", fresh=True)
    first = next(r.getMessage() for r in caplog.records if r.name.startswith("vggnet"))
    assert first.startswith("training on cpu in " + expected) and "auto" in first
    meta = read_run_metadata(tmp_path / "run")
    assert meta.compute["precision"] == expected and meta.compute["device"] == "cpu"


# --- the backends ---------------------------------------------------------------------------

def _images(tmp_path):
    from vggnet.cli import main

    main(["samples", "digits", "--out", str(tmp_path / "s"), "--count", "12"])
    return sorted((tmp_path / "s").glob("*.png"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run exported for every backend: best.onnx, best.xml, and both int8 models (ONNX
    Runtime's best.int8.onnx, OpenVINO's best.int8.xml made by NNCF)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from vggnet.cli import main

    run = train_tiny_run(tmp_path_factory.mktemp("exported") / "run")
    main(["export", str(run), "--format", "openvino", "--int8", "--calibration", "128",
          "--check-images", "100"])
    main(["export", str(run), "--int8", "--calibration", "128", "--check-images", "100"])
    return run


@pytest.mark.parametrize("backend, precision", [("onnx", "auto"), ("openvino", "fp32"),
                                                ("openvino", "bf16"), ("torch", "bf16"),
                                                ("int8", "auto"), ("openvino-int8", "auto")])
def test_every_backend_answers_as_pytorch_fp32(exported, tmp_path, backend, precision):
    images = _images(tmp_path)
    reference = Predictor(exported, backend="torch", precision="fp32").predict(images, top_k=3)
    p = Predictor(exported, backend=backend, precision=precision)
    got = p.predict(images, top_k=3)
    # OpenVINO's int8 model keeps its first convolution in floating point: "int8+bf16" or
    # "int8+fp32" (what the runtime graph says), int8 first
    expected_precision = {"onnx": "fp32", "int8": "int8", "openvino-int8": "int8"}
    if backend == "openvino" and precision == "bf16" and not _openvino_has_bf16():
        expected_precision["openvino"] = "fp32"  # what it really runs there (and says so)
    ran = p.precision.split("+")[0]
    assert ran == expected_precision.get(backend, precision)
    same = [a.top[0][0] == b.top[0][0] for a, b in zip(got, reference)]
    # int8 may flip a near-tie of this barely trained model (its agreement on the whole test
    # set is test_bench's); fp32 and bf16 keep every answer
    assert sum(same) >= (len(same) - 1 if ran == "int8" else len(same))
    tol = {"fp32": 1e-4, "bf16": 0.05, "int8": 0.1}[ran]
    for a, b, agree in zip(got, reference, same):
        assert not agree or abs(a.top[0][1] - b.top[0][1]) <= tol


def _openvino_has_bf16() -> bool:
    """The reference for what OpenVINO can run here: its CPU plugin's own capabilities."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_asked_for_bf16_where_it_cannot_says_what_it_runs(exported, caplog):
    """OpenVINO falls back to fp32 on CPUs without native bf16: the backend reports the
    precision it really runs and warns that bf16 was not available."""
    from vggnet.inference.openvino import OpenVinoClassifier

    with caplog.at_level("WARNING", logger="vggnet.export.openvino"):
        classifier = OpenVinoClassifier(exported / "best.xml", precision="bf16")
    if _openvino_has_bf16():
        assert classifier.precision == "bf16" and not caplog.records
    else:
        assert classifier.precision == "fp32"
        assert "AVX512-BF16 or AMX" in caplog.text and "runs fp32" in caplog.text


def test_openvino_int8_keeps_the_first_convolution_in_float_and_all_8_bits_elsewhere(exported):
    """The recipe of quantize_openvino: the first convolution (whose uint8 x int8 products
    would saturate on CPUs without VNNI) reads float weights; every other convolution and
    linear layer reads int8 weights that use the whole signed range."""
    import openvino as ov

    model = ov.Core().read_model(str(exported / "best.int8.xml"))
    layers = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution",
                                                                              "MatMul")]
    sources = [op.input_value(1).get_node() for op in layers]
    first = sources[0]
    assert first.get_type_name() == "Constant" and first.get_element_type() == ov.Type.f32
    int8_weights = [op.data for op in model.get_ordered_ops()
                    if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(int8_weights) == len(layers) - 1
    assert all(abs(w.astype(int)).max() == 127 for w in int8_weights)  # 8 bits, not 7


def test_openvino_export_checks_itself_and_refuses_a_wrong_name(tmp_path):
    pytest.importorskip("openvino")
    from vggnet.export.openvino import export_openvino
    from vggnet.inference.openvino import OpenVinoClassifier

    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    path = export_openvino(model, tmp_path / "m.xml", input_size=32)
    assert path.with_suffix(".bin").is_file()
    x = torch.randn(5, 3, 32, 32)  # any batch: the batch axis is dynamic
    with torch.inference_mode():
        assert torch.allclose(OpenVinoClassifier(path, precision="fp32")(x), model(x), atol=1e-4)
    with pytest.raises(UsageError, match=r"\.xml"):
        export_openvino(model, tmp_path / "m.onnx", input_size=32)


def test_auto_backend_takes_the_fastest_that_the_run_has(run, tmp_path, monkeypatch):
    from vggnet.inference import backends

    ckpt = run / "best.safetensors"
    int8 = ckpt.with_suffix(".int8.onnx")
    assert choose_backend(ckpt, "auto") == "torch"  # no int8 model: vggnet's own path
    int8.write_bytes(b"")
    try:
        monkeypatch.setattr(backends, "_installed", lambda name: True)
        assert choose_backend(ckpt, "auto") == "openvino-int8"
        monkeypatch.setattr(backends, "_installed", lambda name: name != "openvino")
        assert choose_backend(ckpt, "auto") == "int8"
    finally:
        int8.unlink()
    assert choose_backend(ckpt, "onnx") == "onnx"  # an explicit choice is kept
    with pytest.raises(UsageError, match="choose one of"):
        choose_backend(ckpt, "tensorrt")


def test_a_missing_openvino_is_one_line_that_says_how_to_install(run, tmp_path, monkeypatch,
                                                                 capsys):
    from vggnet.cli import main

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    code = main(["predict", str(run), str(_images(tmp_path)[0]), "--backend", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "pip install 'vggnet[openvino]'" in err[0] and "Traceback" not in err[0]


def test_a_missing_nncf_stops_an_openvino_int8_export_before_any_work(run, monkeypatch,
                                                                      capsys):
    pytest.importorskip("openvino")
    from vggnet.cli import main

    monkeypatch.setitem(sys.modules, "nncf", None)
    code = main(["export", str(run), "--format", "openvino", "--int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "nncf" in err[0] and "pip install 'vggnet[openvino]'" in err[0]
    assert not (run / "best.xml").exists()  # refused up front, nothing half written
    assert main(["export", str(run), "--format", "openvino", "--int8",
                 "--int8-full-range"]) == 2  # ONNX Runtime's option: one line, not ignored
    assert "drop the flag" in capsys.readouterr().err


def test_backends_refuse_a_precision_they_cannot_run(run):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UsageError, match="runs in fp32, not bf16"):
        Predictor(run, backend="onnx", precision="bf16")


def test_predict_says_which_backend_and_precision_ran(run, tmp_path, capsys):
    from vggnet.cli import main

    image = _images(tmp_path)[0]
    assert main(["predict", str(run), str(image), "--backend", "torch", "--precision",
                 "fp32"]) == 0
    assert "torch backend, fp32" in capsys.readouterr().err


# optional packages missing -> the backend `auto` takes for a run with an int8 ONNX export
MISSING = {("onnx",): "openvino",                  # OpenVINO reads the ONNX file itself
           ("onnxscript",): "openvino",            # nothing left to export: as with all
           ("onnxruntime",): "openvino",
           ("openvino",): "onnxruntime",           # ONNX Runtime needs no onnx for int8
           ("onnx", "openvino"): "onnxruntime",
           ("onnxruntime", "openvino"): "torch",
           ("onnx", "onnxruntime", "openvino"): "torch"}


@pytest.mark.parametrize("missing", list(MISSING), ids="+".join)
def test_auto_answers_with_any_optional_package_missing(run, tmp_path, monkeypatch, missing):
    """`--backend auto` on a run with an int8 ONNX export never fails where a lesser backend
    would answer: with each optional package made unimportable in turn, it takes the best
    one that runs, which answers real test images as PyTorch does (int8: nearly always)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    import importlib.util
    import shutil

    from vggnet.cli import main
    from vggnet.data.augment import normalize
    from vggnet.inference import backends
    from vggnet.run import open_run_data, read_run_metadata

    local = tmp_path / "run"
    shutil.copytree(run, local)
    assert main(["export", str(local), "--int8", "--calibration", "16",
                 "--check-images", "20"]) == 0
    meta = read_run_metadata(local)
    test = open_run_data(meta, "test", n=60, as_input=True)
    x = normalize(test.images, meta.preprocessing.mean, meta.preprocessing.std)
    expected = Predictor(local, backend="torch", precision="fp32").probabilities(x)
    for name in missing:  # `import name` now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(backends, "_installed", lambda name: name not in missing
                        and importlib.util.find_spec(name) is not None)
    predictor = Predictor(local, backend="auto")
    assert predictor.backend == MISSING[missing]
    same = (predictor.probabilities(x).argmax(1) == expected.argmax(1)).float().mean()
    assert same >= 0.9, float(same)


def test_the_library_leaves_its_host_process_as_it_found_it(run, tmp_path, monkeypatch):
    """Allocator tuning is for vggnet's own command processes: building and running an engine
    or a training in a program (a notebook) never calls it, a command does; and quantizing
    with NNCF leaves torch's loggers at the levels they had."""
    from vggnet import device
    from vggnet.cli import main
    from helpers import write_image

    calls = []
    monkeypatch.setattr(device, "reuse_freed_memory", lambda: calls.append(1) or True)
    with torch.inference_mode():
        InferenceEngine(with_bn_stats(create_model("vgg11_bn", **SMALL)))(torch.randn(1, 3, 32, 32))
    train_tiny_run(tmp_path / "library", fresh=True)
    assert calls == []
    image = write_image(tmp_path / "a.png", size=(40, 30))
    assert main(["predict", str(run), str(image), "--backend", "torch"]) == 0
    assert calls == [1]
    pytest.importorskip("nncf")
    from vggnet.export.openvino import need_nncf

    extension_log = logging.getLogger("torch.utils.cpp_extension")
    monkeypatch.setattr(extension_log, "level", logging.INFO)
    need_nncf()
    assert extension_log.level == logging.INFO
