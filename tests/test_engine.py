"""The PyTorch inference engine on its own: batch norm folded into the convolutions, a fused
and prepacked CPU program with its ReLUs fused and its weights reordered per input shape,
pooling without indices, weights cast once to bf16, and a check against eager PyTorch that
falls back to eager, with a warning, whenever the fast path disagrees or cannot run.

Everything that depends on the CPU is tested by replacing the detected feature flags."""

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vggnet.inference import fused as fused_module
from vggnet.inference.fused import FusedProgram, fused_or_none, max_pool_2x2
from vggnet.inference.engine import InferenceEngine, fold_batchnorm, optimize_for_inference
from vggnet.models import create_model, list_models

from helpers import with_bn_stats

SMALL = dict(width=0.125, fc_dim=64, num_classes=10)


# --- folding and the inference copy ------------------------------------------------------------

def _features(*layers):
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    return model


def _random_bn(c, positive=True):
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2) if positive else bn.weight.uniform_(-2, -0.5)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


def test_batch_norm_folds_into_the_convolution_before_it():
    model = _features(nn.Conv2d(3, 4, 3), _random_bn(4), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(model)
    assert isinstance(folded.features[1], nn.Identity)
    assert isinstance(model.features[1], nn.BatchNorm2d)  # the original is untouched
    assert not folded.training
    with torch.no_grad():
        assert torch.allclose(folded.features(x), model.features.eval()(x), atol=1e-5)


def test_batch_norm_after_pooling_folds_only_where_the_max_commutes_with_it():
    x = torch.randn(2, 3, 8, 8)
    for positive in (True, False):
        model = _features(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), _random_bn(4, positive))
        folded = fold_batchnorm(model)
        assert isinstance(folded.features[2], nn.Identity) is positive
        with torch.no_grad():
            assert torch.allclose(folded.features(x), model.features.eval()(x), atol=1e-5)
    first = _features(_random_bn(3), nn.Conv2d(3, 4, 3))  # nothing before it to fold into
    assert isinstance(fold_batchnorm(first).features[0], nn.BatchNorm2d)
    after_relu = _features(nn.Conv2d(3, 4, 3), nn.ReLU(), _random_bn(4))
    assert isinstance(fold_batchnorm(after_relu).features[2], nn.BatchNorm2d)
    pool_first = _features(nn.MaxPool2d(2), _random_bn(3))
    assert isinstance(fold_batchnorm(pool_first).features[1], nn.BatchNorm2d)
    # one that cannot fold does not stop those after it
    both = _features(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), _random_bn(4, positive=False),
                     nn.Conv2d(4, 4, 1), _random_bn(4))
    folded = fold_batchnorm(both)
    assert isinstance(folded.features[2], nn.BatchNorm2d)
    assert isinstance(folded.features[4], nn.Identity)
    with torch.no_grad():
        assert torch.allclose(folded.features(x), both.features.eval()(x), atol=1e-5)


def test_the_inference_copy_is_frozen_channels_last_and_cast_once(cpu):
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    fp32 = optimize_for_inference(model)
    assert not any(p.requires_grad for p in fp32.parameters())
    assert any(p.requires_grad for p in model.parameters())  # a copy
    assert fp32.features.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    plain = optimize_for_inference(model, channels_last=False)
    assert plain.features.conv2_1.weight.is_contiguous()
    bf16 = optimize_for_inference(model, precision="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    cpu("avx512_bf16")
    assert {p.dtype for p in optimize_for_inference(model, precision="auto").parameters()} == \
        {torch.bfloat16}
    cpu("avx2")
    assert {p.dtype for p in optimize_for_inference(model, precision="auto").parameters()} == \
        {torch.float32}


def test_compile_wraps_the_copy(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or "compiled")
    assert optimize_for_inference(create_model("vgg11", **SMALL), compile=True) == "compiled"
    assert isinstance(compiled[0], nn.Module)


# --- the fused program -------------------------------------------------------------------------

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
    from vggnet.inference.fused import _Conv, _Linear

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
    from vggnet.inference.fused import _Conv

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


def test_the_engine_checks_the_program_once_at_each_shape_then_trusts_it():
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, "fp32")
    calls = []
    module = engine.module
    engine.module = lambda x: calls.append(len(x)) or module(x)
    x = torch.randn(2, 3, 32, 32)
    first, second = engine(x), engine(x)
    assert calls == [2]  # eager ran once, for the check
    assert torch.equal(first, second) and engine.program is not None
    engine(x[:1])
    engine(torch.randn(1, 3, 40, 40))
    engine(x[:1])
    engine(x)
    assert calls == [2, 1, 1]  # one check per new shape: batch 1, then 40 x 40
    assert engine.checked_shapes == {(2, 3, 32, 32), (1, 3, 32, 32), (1, 3, 40, 40)}


def test_a_program_wrong_at_one_shape_only_is_dropped_when_it_meets_it(caplog):
    """Each input shape has its own reordered weights, so a program right at batch 2 may
    still be wrong at batch 5: it is checked there too."""
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, "fp32")
    program = engine.program
    engine.program = lambda y: program(y) if len(y) != 5 else torch.zeros(len(y), 10)
    engine(torch.randn(2, 3, 32, 32))
    assert engine.program is not None  # right at batch 2: kept
    x = torch.randn(5, 3, 32, 32)
    with caplog.at_level(logging.WARNING):
        out = engine(x)
    with torch.inference_mode():
        assert torch.allclose(out, model(x), atol=1e-5, rtol=1e-4)
    assert engine.program is None and "does not match eager" in caplog.text


def test_a_program_that_fails_is_dropped_for_eager_with_the_reason(caplog):
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, "fp32")

    def broken(x):
        raise RuntimeError("no kernel for this\nsecond line")

    engine.program = broken
    x = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.WARNING):
        out = engine(x)
    assert engine.program is None and "(no kernel for this); running eager" in caplog.text
    with torch.inference_mode():
        assert torch.allclose(out, model(x), atol=1e-5, rtol=1e-4)
    assert torch.equal(engine(x), out)  # eager from now on


@pytest.mark.parametrize("precision, off, kept", [("fp32", 5e-5, True), ("fp32", 5e-4, False),
                                                  ("bf16", 1e-2, True), ("bf16", 5e-2, False)])
def test_the_check_tolerates_rounding_only(precision, off, kept):
    """The program may differ from eager by rounding: 1e-4 of the largest logit in fp32,
    2e-2 in bf16; more than that and the engine runs eager."""
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    engine = InferenceEngine(model, precision)
    program = engine.program
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        scale = max(1.0, float(engine.module(x.to(engine.dtype, memory_format=torch.channels_last))
                               .float().abs().max()))

    def shifted(y):
        out = program(y).float()
        return out + off * scale

    engine.program = shifted
    engine(x)
    assert (engine.program is not None) is kept


@pytest.mark.parametrize("logit, off, kept", [(0.5, 1.5e-4, False), (0.5, 0.5e-4, True),
                                              (10.0, 5e-4, True), (10.0, 1.5e-3, False)])
def test_the_tolerance_is_relative_to_the_largest_logit_but_never_below_1e_4(logit, off, kept,
                                                                            caplog):
    """fp32: outputs may differ by 1e-4 times the largest logit, and by 1e-4 when every
    logit is smaller than 1 (a relative bound would go to zero with them); what is dropped
    is logged with the difference and the tolerance."""
    engine = InferenceEngine(create_model("vgg11", **SMALL), "fp32")
    engine.module = lambda x: torch.full((x.shape[0], 3), logit)
    engine.program = lambda x: torch.full((x.shape[0], 3), logit + off)
    with caplog.at_level(logging.WARNING, logger="vggnet"):
        engine(torch.randn(1, 3, 32, 32))
    assert (engine.program is not None) is kept
    if not kept:
        tol = 1e-4 * max(1.0, logit)
        assert f"outputs differ by {off:.3g} (tolerance {tol:.3g})" in caplog.text


def test_the_engine_runs_channels_last_unless_told_not_to():
    """The layout the CPU's convolutions are fastest in: the copy's weights and each input
    are channels-last; contiguous when asked."""
    model = create_model("vgg11", **SMALL)
    seen = []
    for channels_last in (True, False):
        engine = InferenceEngine(model, "fp32", channels_last=channels_last, fused=False)
        weight = engine.module.features.conv1_1.weight
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert weight.is_contiguous(memory_format=layout)
        inner = engine.module
        engine.module = lambda x, inner=inner: seen.append(x) or inner(x)
        engine(torch.randn(2, 3, 32, 32))
        assert seen[-1].is_contiguous(memory_format=layout) and seen[-1].dtype == torch.float32
    assert not seen[0].is_contiguous() and seen[1].is_contiguous()


def test_eager_only_when_asked_or_where_no_program_can_be_built(monkeypatch, caplog):
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    assert InferenceEngine(model, "fp32", fused=False).program is None
    assert fused_or_none(nn.Identity()) is None  # no parameters
    no_head = nn.Sequential(nn.Linear(2, 2))
    assert fused_or_none(no_head) is None
    monkeypatch.setattr(fused_module, "_mkldnn_ops_available", lambda: False)
    assert fused_or_none(optimize_for_inference(model)) is None
    engine = InferenceEngine(model, "fp32")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(engine(x), model(x), atol=1e-5, rtol=1e-4)
    monkeypatch.undo()

    class Branchy(nn.Module):
        def forward(self, x):
            return x

    odd = create_model("vgg11", **SMALL).eval()
    odd.head = Branchy()
    with caplog.at_level(logging.WARNING):
        assert fused_or_none(odd) is None
    assert "Branchy is not a sequence of layers" in caplog.text
    with pytest.raises(TypeError):
        FusedProgram(odd)


def test_weights_reordered_for_no_shape_are_reordered_once():
    from vggnet.inference.fused import _Conv

    model = with_bn_stats(create_model("vgg11_bn", head="linear", **SMALL))
    program = fused_or_none(optimize_for_inference(model), per_shape=False)
    first = next(s for s in program.steps if isinstance(s, _Conv))
    assert list(first.packed) == [None]
    with torch.inference_mode():
        for n in (1, 3):
            x = torch.randn(n, 3, 32, 32).contiguous(memory_format=torch.channels_last)
            assert torch.allclose(program(x), model(x), atol=1e-5, rtol=1e-4)
    assert list(first.packed) == [None]


def test_the_program_checks_its_input_as_the_model_does():
    model = with_bn_stats(create_model("vgg11_bn", **SMALL))
    program = fused_or_none(optimize_for_inference(model))
    with pytest.raises(Exception) as info:
        program(torch.randn(1, 1, 32, 32).contiguous(memory_format=torch.channels_last))
    with pytest.raises(type(info.value)):
        model(torch.randn(1, 1, 32, 32))


def test_only_plain_2x2_pools_run_as_two_maxima():
    from vggnet.inference.fused import _is_plain_2x2_pool

    assert _is_plain_2x2_pool(nn.MaxPool2d(2)) and _is_plain_2x2_pool(nn.MaxPool2d((2, 2), (2, 2)))
    for other in (nn.MaxPool2d(3), nn.MaxPool2d(2, 1), nn.MaxPool2d(2, padding=1),
                  nn.MaxPool2d(2, dilation=2), nn.MaxPool2d(2, ceil_mode=True),
                  nn.MaxPool2d(2, return_indices=True), nn.AvgPool2d(2)):
        assert not _is_plain_2x2_pool(other), other
