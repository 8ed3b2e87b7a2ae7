"""Winograd F(2x2, 3x3) convolutions for small maps: exact against ``F.conv2d`` (forward and
every gradient), a drop-in for the model's convolutions (same state dict, ordinary convolution
when tracing, scripting or exporting), and a training engine option."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vggnet.errors import ConfigError
from vggnet.training.config import resolve
from vggnet.training.setup import apply_conv_algorithm
from vggnet.training.loop import train
from vggnet.models import create_model
from vggnet.training.winograd import WinogradConv2d, convert_to_winograd, winograd_conv3x3

DIGITS = dict(data="digits", model="vgg11_bn", width=0.125, head="linear", batch_size=64,
              lr=0.05, crop_padding=2, flip=False, progress=False, deterministic=True)


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (2, 5, 4, 6), (1, 4, 8, 8), (3, 2, 6, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv2d_and_its_gradients_exactly(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True) if bias else None
    y = winograd_conv3x3(x, w, b)
    ref = F.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last)
    inputs = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradcheck(lambda *a: winograd_conv3x3(*a), inputs)
    # gradients against conv2d's own, from a downstream loss
    g = torch.randn_like(ref)
    ours = torch.autograd.grad((y * g).sum(), inputs)
    theirs = torch.autograd.grad((ref * g).sum(), inputs)
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a, t, rtol=1e-10, atol=1e-10)


def test_channels_last_weights_give_the_same_values_and_a_gradient_in_their_layout():
    """A model moved to channels-last (as the engine trains) has channels-last conv weights:
    the weight transform works on them in place, and their gradient comes back in that
    layout (no copy by autograd)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    w.requires_grad_(True)
    y = winograd_conv3x3(x, w)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: winograd_conv3x3(a, b), (x, w))
    y.square().sum().backward()
    assert w.grad.is_contiguous(memory_format=torch.channels_last)
    ref = torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), w)[0]
    torch.testing.assert_close(w.grad, ref, rtol=1e-10, atol=1e-10)


def test_bf16_error_is_small_and_bounded():
    """The documented price: about 0.7% relative error per layer in bf16 (direct bf16: ~0.25%)."""
    torch.manual_seed(0)
    x = F.relu(torch.randn(16, 128, 8, 8)).to(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3) * 0.03
    ref = F.conv2d(x, w, padding=1)
    y = winograd_conv3x3(x.bfloat16(), w, dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16
    rel = ((y.float() - ref).norm() / ref.norm()).item()
    direct = ((F.conv2d(x.bfloat16(), w.bfloat16(), padding=1).float() - ref).norm()
              / ref.norm()).item()
    assert rel < 0.012 and rel < 5 * direct


def test_bad_shapes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="even height and width"):
        winograd_conv3x3(torch.randn(1, 3, 5, 4), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\) weight"):
        winograd_conv3x3(torch.randn(1, 3, 4, 4), torch.randn(4, 3, 5, 5))


def _cifar_vgg16_bn():
    torch.manual_seed(0)
    return create_model("vgg16_bn", num_classes=10, head="linear").eval()


def test_conversion_shares_parameters_and_keeps_the_state_dict():
    model = _cifar_vgg16_bn()
    before = model.state_dict()
    ptrs = {k: v.data_ptr() for k, v in before.items()}
    # by default only layers with >= 256 input channels: conv3_2 onwards, 8 of 13
    assert convert_to_winograd(model) == 8
    assert convert_to_winograd(model, min_channels=1) == 13  # every 3x3 conv of VGG-16
    assert sum(isinstance(m, WinogradConv2d) for m in model.modules()) == 13
    after = model.state_dict()
    assert list(after) == list(before)
    assert {k: v.data_ptr() for k, v in after.items()} == ptrs
    assert convert_to_winograd(model, max_pixels=16) == 13  # idempotent, retunes
    assert all(m.max_pixels == 16 for m in model.modules() if isinstance(m, WinogradConv2d))
    with pytest.raises(ValueError, match="max_pixels must be at least 4"):
        convert_to_winograd(model, max_pixels=1)


def test_conversion_of_a_channels_last_model_keeps_its_parameters_and_values():
    """The engine moves the model to channels-last first; the converted layers' weights are
    then stored contiguous (what the weight transform reads without a copy), as the same
    Parameter objects with the same values, and the other layers stay channels-last."""
    model = _cifar_vgg16_bn().to(memory_format=torch.channels_last)
    params = {name: p for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in params.items()}
    convert_to_winograd(model)
    assert all(p is params[name] for name, p in model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, values[name], rtol=0, atol=0)
    winograd = [m for m in model.modules() if isinstance(m, WinogradConv2d)]
    assert winograd and all(m.weight.is_contiguous() for m in winograd)
    others = [m for m in model.modules() if type(m) is nn.Conv2d]
    assert others and all(m.weight.is_contiguous(memory_format=torch.channels_last)
                          for m in others)


def test_converted_model_dispatches_by_map_size_channels_dtype_and_grad(monkeypatch):
    model = _cifar_vgg16_bn().to(memory_format=torch.channels_last)
    ref = _cifar_vgg16_bn().to(memory_format=torch.channels_last)
    convert_to_winograd(model, min_channels=1)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    calls = []
    real = winograd_conv3x3
    monkeypatch.setattr("vggnet.training.winograd.winograd_conv3x3",
                        lambda x, *a, **k: calls.append(tuple(x.shape[-2:])) or real(x, *a, **k))
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    # fp32: not one of the default dtypes, so the ordinary convolution, bit for bit
    assert torch.equal(model(x), ref(x)) and calls == []
    # bf16, forward alone (no grad): the ordinary convolution, bit for bit
    with torch.no_grad(), bf16:
        assert torch.equal(model(x), ref(x)) and calls == []
    # bf16 with a backward to come: the 8x8, 4x4 and 2x2 layers (3 each) by Winograd
    with bf16:
        y, r = model(x).float(), ref(x).float()
    assert sorted(calls) == [(2, 2)] * 3 + [(4, 4)] * 3 + [(8, 8)] * 3
    assert ((y - r).norm() / r.norm()).item() < 0.03
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # layers with fewer input channels than min_channels: conv3_1 (128) is left out
    calls.clear()
    convert_to_winograd(model)
    with bf16:
        model(x)
    assert sorted(calls) == [(2, 2)] * 3 + [(4, 4)] * 3 + [(8, 8)] * 2
    # odd-sized maps fall back to the ordinary convolution: at 56x56 the blocks see
    # 56, 28, 14, 7 and 3 pixels a side, the first three too large, the rest odd
    calls.clear()
    with bf16:
        model(torch.randn(1, 3, 56, 56))
    assert calls == []


def test_torch_export_and_onnx_export_capture_the_ordinary_convolution(tmp_path):
    """A graph captured from a model with Winograd layers (torch.export, the ONNX exporter)
    holds the ordinary convolutions, which every runtime has, and answers as the plain model."""
    model = _cifar_vgg16_bn().eval()
    convert_to_winograd(model, min_channels=1, dtypes=None, backward_only=False)  # always
    ref = _cifar_vgg16_bn().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)  # Winograd, fp32
        program = torch.export.export(model, (x,))
        convs = [n for n in program.graph.nodes if n.op == "call_function"
                 and ("convolution" in str(n.target) or "conv2d" in str(n.target))]
        assert len(convs) == 13
        torch.testing.assert_close(program.module()(x), ref(x))
    pytest.importorskip("onnx")
    import onnx

    from vggnet.export.formats import export_onnx

    path = export_onnx(model, tmp_path / "w.onnx", input_size=32)
    assert sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node) == 13


@pytest.mark.parametrize("algo, precision, flags, expected", [
    ("auto", "bf16", (), True), ("auto", "fp32", ("avx512_bf16",), False),
    ("auto", "auto", ("avx2",), False),            # auto precision is fp32 on this CPU
    ("auto", "auto", ("avx512_bf16",), True),      # and bf16 on this one
    ("direct", "bf16", ("amx_bf16",), False), ("winograd", "fp32", (), True),
])
def test_engine_option_chooses_when_to_convert(monkeypatch, algo, precision, flags, expected):
    from vggnet import device

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    model = create_model("vgg11_bn", num_classes=10, head="linear")  # 256-512 channels
    cfg = resolve(None, {**DIGITS, "conv_algorithm": algo, "precision": precision})
    assert (apply_conv_algorithm(model, cfg, torch.device("cpu")) > 0) is expected


AMX_FLAGS = ("avx512_bf16", "amx_tile", "amx_bf16")


@pytest.mark.parametrize("flags, isa, max_pixels", [
    (("avx512_bf16",), None, 64),               # AVX512-BF16 alone: Winograd on 8x8 maps
    (AMX_FLAGS, None, 16),                      # AMX: oneDNN's direct wins on 8x8
    (AMX_FLAGS, "avx10_1_512_amx", 16),         # oneDNN capped at a set that still has AMX
    (AMX_FLAGS, "AVX512_CORE_BF16", 64),        # capped below AMX: computes as the EPYC does
])
def test_auto_takes_the_maps_where_winograd_won_on_that_cpu(monkeypatch, flags, isa, max_pixels):
    from vggnet import device

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    model = create_model("vgg16_bn", num_classes=10, head="linear")
    cfg = resolve(None, {**DIGITS, "conv_algorithm": "auto", "precision": "auto"})
    apply_conv_algorithm(model, cfg, torch.device("cpu"))
    converted = [m for m in model.modules() if isinstance(m, WinogradConv2d)]
    assert converted and all(m.max_pixels == max_pixels for m in converted)
    used = {}  # map pixels -> whether Winograd ran, over VGG-16's layers in a training step
    hooks = [m.register_forward_pre_hook(lambda m, a: used.setdefault(
        a[0].shape[-2] * a[0].shape[-1], set()).add(m._use_winograd(a[0]))) for m in converted]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert used == {64: {max_pixels == 64}, 16: {True}, 4: {True}}  # 8x8, 4x4, 2x2 maps


def test_engine_option_is_checked():
    with pytest.raises(ConfigError, match="conv_algorithm must be one of auto, direct, winograd"):
        resolve(None, {**DIGITS, "conv_algorithm": "fft"})


def test_sgd_steps_with_winograd_follow_exact_arithmetic():
    """In fp32, five SGD steps of a net whose every 3x3 convolution runs by Winograd follow the
    same steps taken in fp64 with ordinary convolutions, to rounding. (The reference is fp64,
    not fp32 direct convolution: on some CPUs oneDNN's fp32 weight gradients are themselves
    off by up to 1e-3 of their scale, measured on an AVX2 machine, so a comparison with them
    tests oneDNN, not Winograd.)"""
    torch.manual_seed(0)
    exact = create_model("vgg11_bn", num_classes=10, width=0.25, head="linear").train()
    wino = copy.deepcopy(exact)
    assert convert_to_winograd(wino, min_channels=1, dtypes=None, backward_only=False) == 8
    exact = exact.double()
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (exact, wino)]
    for _ in range(5):
        x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        losses = []
        for model, opt, inputs in zip((exact, wino), opts, (x.double(), x)):
            loss = F.cross_entropy(model(inputs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)  # measured: <= 2e-7
    for a, b in zip(exact.parameters(), wino.parameters()):
        torch.testing.assert_close(b, a.float(), rtol=1e-5, atol=2e-6)  # measured: <= 3e-7


def test_training_with_winograd_learns(tmp_path, caplog):
    caplog.set_level("INFO", logger="vggnet")
    run = train(resolve(None, {**DIGITS, "epochs": 3, "conv_algorithm": "winograd",
                               "out": str(tmp_path / "w")}))
    assert "Winograd" in caplog.text
    assert run.best_top1 > 0.8


def test_bf16_winograd_run_resumes_exactly(tmp_path):
    cfg = dict(DIGITS, epochs=2, precision="bf16", conv_algorithm="winograd")
    full = train(resolve(None, {**cfg, "out": str(tmp_path / "a")}))
    train(resolve(None, {**cfg, "out": str(tmp_path / "b"), "stop_after": 1}))
    resumed = train(resolve(None, {**cfg, "out": str(tmp_path / "b"), "resume": True}))
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in full.history]
