"""Precision by CPU features, the fused bf16/fp32 PyTorch engine, and the three inference
backends (PyTorch, ONNX Runtime, OpenVINO) answering the same prediction tests.

Everything that depends on the CPU is tested by replacing the detected feature flags, so these
tests mean the same on an AVX2-only machine, an AVX512-BF16 one and an AMX one."""

import logging
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vggnet import device as dev
from vggnet.errors import UsageError
from vggnet.export.backends import choose_backend
from vggnet.export.fused import fused_or_none, max_pool_2x2
from vggnet.export.optimize import InferenceEngine, optimize_for_inference
from vggnet.models import create_model, list_models
from vggnet.predict import Predictor

from helpers import train_tiny_run, with_bn_stats

SMALL = dict(width=0.125, fc_dim=64, num_classes=10)


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with the given feature flags: ``cpu("avx2", "avx512_bf16")``."""
    def pretend(*flags):
        monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    return pretend


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


# --- the PyTorch engine -------------------------------------------------------------------------

@pytest.mark.parametrize("name, head", [("vgg11_bn", "classifier"), ("vgg16_c_bn", "linear"),
                                        ("vgg11_lrn", "conv"), ("vgg_speed", "linear")])
def test_fused_program_gives_the_eager_modules_outputs(name, head):
    model = with_bn_stats(create_model(name, head=head, **SMALL))
    fast = optimize_for_inference(model)
    program = fused_or_none(fast)
    assert program is not None
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(x)
        assert torch.allclose(program(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_engine_answers_for_every_model_in_every_precision(name, precision):
    """Every registered model through the PyTorch engine (A-LRN's normalisation had no bf16
    kernel, so the bf16 engine failed on it): the same top class as eager fp32 on clearly
    separated logits, and logits within the precision's rounding."""
    model = with_bn_stats(create_model(name, **SMALL)).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x)
        got = InferenceEngine(model, precision)(x)
    assert got.dtype == torch.float32
    scale = float(expected.abs().max())
    tolerance = 1e-4 if precision == "fp32" else 0.05  # bf16 keeps 8 bits of mantissa
    assert float((got - expected).abs().max()) <= tolerance * max(1.0, scale)


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn", "vgg16_c_bn", "vgg11_lrn_bn"])
def test_every_relu_after_a_convolution_is_fused_into_it_batch_norm_or_not(name):
    """With batch norm folded into the convolution before it, the ReLU after it is fused as on
    a plain model: no ReLU is left to run on its own, in the features or the FC head."""
    from vggnet.export.fused import _Conv, _Linear

    model = with_bn_stats(create_model(name, head="classifier", **SMALL))
    program = fused_or_none(optimize_for_inference(model))
    convs = [s for s in program.steps if isinstance(s, _Conv)]
    linears = [s for s in program.steps if isinstance(s, _Linear)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.features.modules())
    assert all(c.attr == "relu" for c in convs)
    assert [f.attr for f in linears] == ["relu", "relu", "none"]  # fc6, fc7, then the logits
    assert not any(isinstance(s, nn.ReLU) for s in program.steps)


def test_convolution_weights_are_reordered_once_per_input_shape_and_the_last_few_kept():
    """oneDNN blocks a convolution's weights for the problem it runs, so the program reorders
    them per input shape (once each, reused after) and keeps the last ``KEEP`` shapes."""
    from vggnet.export.fused import _Conv

    model = with_bn_stats(create_model("vgg11_bn", head="linear", **SMALL))
    fast = optimize_for_inference(model)
    program = fused_or_none(fast)
    first = next(s for s in program.steps if isinstance(s, _Conv))
    shapes = [(1, 3, 32, 32), (4, 3, 32, 32), (2, 3, 40, 32), (1, 3, 48, 48), (3, 3, 32, 32)]
    with torch.inference_mode():
        for shape in shapes + shapes[:1]:
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
            assert torch.allclose(program(x), model(x), atol=1e-5, rtol=1e-4)
        kept = list(first.packed)
        assert len(kept) == _Conv.KEEP and kept[-1] == shapes[0]  # the oldest but re-used
        assert shapes[1] not in kept  # the least recently used went
        packed = first.packed[shapes[0]]
        program(torch.randn(shapes[0]).contiguous(memory_format=torch.channels_last))
        assert first.packed[shapes[0]] is packed  # reused, not reordered again


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (2, 3), (3, 2)])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_two_by_two_pool_is_max_pool2d(size, layout):
    x = torch.randn(2, 5, *size).contiguous(memory_format=layout)
    for y in (x, x.to(torch.bfloat16)):
        got = max_pool_2x2(y)
        assert torch.equal(got, F.max_pool2d(y, 2))
        assert got.is_contiguous(memory_format=layout)  # the next convolution's layout, kept


def test_bf16_engine_casts_the_weights_once_and_returns_fp32():
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, "bf16")
    assert engine.precision == "bf16"
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original untouched
    x = torch.randn(4, 3, 32, 32)
    out = engine(x)
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    with torch.inference_mode():
        ref = model(x)
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()  # bf16 keeps 8 bits of mantissa


def test_auto_engine_follows_the_cpu(cpu):
    model = create_model("vgg11_bn", **SMALL).eval()
    cpu("avx512_bf16")
    assert InferenceEngine(model).precision == "bf16"
    cpu("avx2")
    assert InferenceEngine(model).precision == "fp32"


def test_a_fused_program_that_disagrees_is_dropped_for_eager(caplog):
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, "fp32")
    assert engine.program is not None
    engine.program = lambda x: torch.zeros(len(x), 10)  # a broken fast path
    x = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.WARNING):
        out = engine(x)
    with torch.inference_mode():
        assert torch.allclose(out, model(x), atol=1e-5, rtol=1e-4)
    assert engine.program is None and "does not match eager" in caplog.text


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
    from vggnet.export.openvino import OpenVinoClassifier

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
    from vggnet.export.openvino import OpenVinoClassifier, export_openvino

    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    path = export_openvino(model, tmp_path / "m.xml", input_size=32)
    assert path.with_suffix(".bin").is_file()
    x = torch.randn(5, 3, 32, 32)  # any batch: the batch axis is dynamic
    with torch.inference_mode():
        assert torch.allclose(OpenVinoClassifier(path, precision="fp32")(x), model(x), atol=1e-4)
    with pytest.raises(UsageError, match=r"\.xml"):
        export_openvino(model, tmp_path / "m.onnx", input_size=32)


def test_auto_backend_takes_the_fastest_that_the_run_has(run, tmp_path, monkeypatch):
    from vggnet.export import backends

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
    from vggnet.export import backends
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
