"""The paper's training scale and test protocols, checked by equivalences."""

import pytest
import torch

from vggnet.data import augment
from vggnet.evaluation.protocols import (evaluate_protocol, grid_positions, protocol_probs,
                                         rescale)
from vggnet.models import PAPER_CONFIG, create_model, list_models

SMALL = dict(width=0.125, fc_dim=64, num_classes=10)


def test_dense_at_the_crop_size_equals_the_standard_head():
    """Dense evaluation of a 224 centre crop == the classifier head on that crop."""
    model = create_model("vgg16", **SMALL).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        single = protocol_probs(model, x, "single", [224], 224)
        dense = protocol_probs(model, x, "dense", [224], 224)
        assert torch.allclose(dense, model(x).softmax(1), atol=1e-6)
    assert torch.allclose(single, dense, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in list_models() if n in PAPER_CONFIG])
def test_dense_score_map_is_the_fc_net_slid_over_the_image(name):
    """At Q=256 the 2x2 score map holds the FC net applied to each 7x7 window of pool5."""
    model = create_model(name, **SMALL).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        dense = create_model(name, head="conv", **SMALL, weights=model.state_dict()).eval()
        scores = dense.score_map(x)
        assert scores.shape == (1, 10, 2, 2)
        pool5 = model.forward_features(x)  # 8 x 8
        for i in range(2):
            for j in range(2):
                fc = model.forward_head(pool5[..., i:i + 7, j:j + 7])
                assert torch.allclose(scores[0, :, i, j], fc[0], atol=1e-6)


def test_multicrop_with_one_centre_crop_equals_single_crop():
    model = create_model("vgg11_bn", head="linear", **SMALL).eval()
    x = torch.randn(4, 3, 48, 40)
    with torch.no_grad():
        single = protocol_probs(model, x, "single", [40], 32)
        multi = protocol_probs(model, x, "multicrop", [40], 32, grid=1)
    assert torch.allclose(single, multi, atol=1e-6)


def test_flip_and_multiscale_average_softmax():
    model = create_model("vgg11", **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        p = protocol_probs(model, x, "dense", [32, 48], 32, flip=True)
        expected = sum(model(v).softmax(1) for v in
                       [x, x.flip(3), rescale(x, 48), rescale(x, 48).flip(3)]) / 4
    assert torch.allclose(p, expected, atol=1e-6)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


def test_multicrop_grid_and_combination():
    assert grid_positions(48, 32, 5) == [0, 4, 8, 12, 16]
    assert grid_positions(32, 32, 5) == [0] * 5
    model = create_model("vgg11", **SMALL).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        d = protocol_probs(model, x, "dense", [40], 32)
        m = protocol_probs(model, x, "multicrop", [40], 32)
        both = protocol_probs(model, x, "dense+multicrop", [40], 32)
    assert torch.allclose(both, (d + m) / 2, atol=1e-6)


def test_evaluate_protocol_on_uint8_images():
    model = create_model("vgg11_bn", head="linear", **SMALL)
    images = torch.randint(0, 255, (20, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(20) % 10
    r = evaluate_protocol(model, images, labels, protocol="dense+multicrop", scales=[32, 40],
                          flip=True, mean=[0.5] * 3, std=[0.25] * 3, batch_size=7)
    assert r["n"] == 20 and 0 <= r["top1"] <= r["top5"] <= 1
    with pytest.raises(ValueError, match="smaller than the crop"):
        evaluate_protocol(model, images, labels, scales=[24], mean=[0.5] * 3, std=[0.25] * 3)


def test_scale_jitter_draws_every_scale_and_crops_to_the_input_size():
    x = torch.randint(0, 255, (400, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment.random_scale_crop(x, 32, 48, 32, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    fixed = augment.random_scale_crop(x[:4], 32, 32, 32, g)
    assert torch.equal(fixed, x[:4])  # S = crop size: the image itself
    # a constant image stays constant at any scale
    flat = torch.full((8, 3, 32, 32), 77, dtype=torch.uint8)
    assert (augment.random_scale_crop(flat, 36, 44, 32, g) == 77).all()


def test_translate_and_shift_tta():
    from vggnet.evaluation.metrics import tta_probs, translate

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    down = translate(x, 2, 1)
    assert torch.equal(down[..., 2:, 1:], x[..., :-2, :-1])  # content moved down 2, right 1
    assert torch.equal(down[..., 0, 1:], x[..., 2, :-1])     # border filled by reflection
    assert torch.equal(translate(x, 0, 0), x)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 36, 4))
    views = [x, translate(x, 1, 1), translate(x, -1, -1)]
    views += [v.flip(3) for v in views]
    expected = sum(model(v).softmax(1) for v in views) / 6
    assert torch.allclose(tta_probs(model, x, flip=True, shift=1), expected)
    assert torch.allclose(tta_probs(model, x), model(x).softmax(1))


def test_single_protocol_shift_is_the_training_tta():
    from vggnet.evaluation.metrics import tta_probs

    model = create_model("vgg11_bn", head="linear", **SMALL).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(protocol_probs(model, x, "single", [32], 32, flip=True, shift=2),
                                   tta_probs(model, x, flip=True, shift=2))
        with pytest.raises(ValueError, match="single protocol"):
            protocol_probs(model, x, "dense", [32], 32, shift=2)
