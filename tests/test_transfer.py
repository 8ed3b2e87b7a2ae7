"""Fine-tuning from a run with nothing but --data, --weights and --freeze: the run lends its
architecture and preprocessing, the finetune recipe its schedule, flags override both; the
backbone can be unfrozen after N epochs at its own learning rate."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import train_tiny_run
from vggnet.cli import main
from vggnet.run import load_checkpoint, read_run_metadata
from vggnet.training.config import TrainConfig, resolve
from vggnet.training.setup import build_optimizer, freeze_backbone
from vggnet.training.transfer import format_normalize, parse_normalize


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("transfer") / "run")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two new classes of images of many sizes (as photos are), train/ and val/."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for label, tint in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(20, 70, size=2)
                pixels = np.clip(rng.normal(tint, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_a_run_lends_its_architecture_and_preprocessing(run, photos, tmp_path, monkeypatch,
                                                        caplog):
    monkeypatch.chdir(tmp_path)  # the finetune recipe's out: runs/finetune, here
    caplog.set_level(logging.INFO, logger="vggnet")
    assert main(["train", "--data", str(photos), "--weights", str(run),
                 "--freeze", "features"]) == 0
    source = read_run_metadata(run)
    config = json.loads((tmp_path / "runs/finetune/config.json").read_text())
    for key in ("width", "head", "fc_dim"):
        assert config[key] == source.model_config[key]
    assert config["model"] == source.model_config["name"]
    assert config["image_size"] == source.preprocessing.test_scale
    assert config["normalize"] == format_normalize(source.preprocessing.mean,
                                                   source.preprocessing.std)
    assert (config["epochs"], config["lr"], config["schedule"]) == (15, 0.01, "cosine")
    new = read_run_metadata(tmp_path / "runs/finetune")
    assert new.classes == ["blue", "red"]
    np.testing.assert_allclose(new.preprocessing.mean, source.preprocessing.mean, atol=1e-3)
    assert new.preprocessing.input_size == source.preprocessing.input_size
    log = caplog.text
    assert f"from {run}: model vgg11_bn, width 0.125, head linear" in log
    assert "no --config: fine-tuning defaults from the packaged recipe finetune" in log
    # head only: the backbone is exactly the run's, batch-norm statistics included
    before, _ = load_checkpoint(run)
    after, _ = load_checkpoint(tmp_path / "runs/finetune", which="last")
    for (name, a), b in zip(before.features.state_dict().items(),
                            after.features.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_flags_and_recipes_override_what_a_run_lends(run, photos):
    cfg = resolve(None, {"data": str(photos), "weights": str(run), "image_size": "48",
                         "lr": "0.003"})
    assert cfg.image_size == 48 and cfg.lr == 0.003  # the user's
    assert cfg.width == 0.125 and cfg.epochs == 15   # the run's and the finetune recipe's
    assert "image_size" not in cfg.inherited and "width" in cfg.inherited
    cfg = resolve("cifar10_quick", {"data": str(photos), "weights": str(run)})
    assert cfg.recipe_default is None and cfg.model == "vgg11_bn"  # a recipe replaces finetune
    cfg = resolve(None, {"data": str(photos), "init_from": str(run), "model": "vgg13_bn"})
    assert cfg.model == "vgg13_bn" and cfg.width == 0.125  # a deeper net from a shallower one
    plain = resolve(None, {"data": str(photos)})  # photos of many sizes: the data sets one
    assert set(plain.inherited) == {"image_size"} and plain.epochs == TrainConfig().epochs


def test_normalize_is_checked_and_imagenet_weights_lend_imagenets():
    assert parse_normalize("imagenet")[0] == pytest.approx((0.485, 0.456, 0.406))
    assert parse_normalize("0.5,0.5,0.5/0.25,0.25,0.25") == ((0.5,) * 3, (0.25,) * 3)
    from vggnet.errors import ConfigError

    for bad in ("0.5,0.5/0.2", "red/blue", "0.5/0"):
        with pytest.raises(ConfigError, match="normalize must be"):
            resolve(None, {"normalize": bad})
    assert resolve(None, {"weights": "imagenet", "model": "vgg11"}).normalize == "imagenet"


def test_the_backbone_unfreezes_after_n_epochs_at_its_own_learning_rate(run, photos, tmp_path,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="vggnet")
    out = tmp_path / "unfrozen"
    assert main(["train", "--data", str(photos), "--weights", str(run), "--freeze", "features",
                 "--unfreeze-after", "1", "--epochs", "2", "--out", str(out),
                 "--progress", "false"]) == 0
    assert "epoch 2: the backbone is unfrozen" in caplog.text
    before, _ = load_checkpoint(run)
    after, _ = load_checkpoint(out, which="last")
    changed = [not torch.equal(a, b) for a, b in zip(before.features.parameters(),
                                                     after.features.parameters())]
    assert all(changed)  # every backbone parameter trained in epoch 2

    cfg = resolve(None, {"data": str(photos), "weights": str(run), "freeze": "features",
                         "unfreeze_after": "3"})
    model, _ = load_checkpoint(run)
    model.frozen_backbone = freeze_backbone(model)
    optimizer = build_optimizer(cfg, model, torch.device("cpu"))
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert all(lrs[id(p)] == pytest.approx(cfg.lr * 0.1) for p in model.features.parameters())
    assert all(lrs[id(p)] == pytest.approx(cfg.lr) for p in model.head.parameters())


def test_unfreeze_after_needs_freeze_and_an_epoch_inside_the_run(run, photos):
    from vggnet.errors import ConfigError

    with pytest.raises(ConfigError, match="unfreeze_after needs freeze features"):
        resolve(None, {"data": str(photos), "weights": str(run), "unfreeze_after": "2"})
    with pytest.raises(ConfigError, match="unfreeze_after needs"):
        resolve(None, {"data": str(photos), "weights": str(run), "freeze": "features",
                       "unfreeze_after": "15"})


def test_unfreezing_trains_only_what_the_freeze_stopped(tmp_path, caplog):
    """vgg_speed keeps its whitening weights and batch-norm scales fixed by design: a frozen
    backbone unfrozen after an epoch trains its other parameters, never those; none of them
    is in the optimizer, and Lookahead averages the unfrozen backbone too."""
    from vggnet.training.loop import _new_state, train

    source = tmp_path / "speed"
    train(resolve(None, dict(data="digits", model="vgg_speed", epochs=1, batch_size=64,
                             progress=False, out=str(source))))
    cfg = resolve(None, dict(data="digits", weights=str(source), freeze="features",
                             unfreeze_after="1", epochs="2", lookahead="2", lr="0.05",
                             whiten_bias_epochs="3", progress="false",
                             out=str(tmp_path / "tuned")))
    before, _ = load_checkpoint(source)
    fixed = {"whiten.weight"} | {n for n, p in before.features.named_parameters()
                                 if not p.requires_grad}
    assert "whiten.weight" in fixed and any(n.endswith("bn.weight") or ".weight" in n
                                            for n in fixed - {"whiten.weight"})
    train(cfg)
    after, _ = load_checkpoint(tmp_path / "tuned", which="last")
    named_after = dict(after.features.named_parameters())
    for name, p in before.features.named_parameters():
        same = torch.equal(p, named_after[name])
        assert same == (name in fixed), name  # the fixed stay, every other one trained

    from vggnet.training.setup import build_model

    model = build_model(cfg, num_classes=10)
    state = _new_state(cfg, model, steps=10, data_gen=torch.Generator(), device="cpu")
    in_optimizer = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
    averaged = {id(p) for p in state.lookahead.params}
    for name, p in model.features.named_parameters():
        assert (id(p) in in_optimizer) == (name not in fixed), name
        assert (id(p) in averaged) == (name not in fixed), name
    # what trains in each epoch: nothing of the backbone while frozen (the whitening bias
    # included), then all but the fixed
    from vggnet.training.hooks import recipe_hooks

    hooks = recipe_hooks(cfg, model)
    for epoch in (0, 1):
        for hook in hooks:
            hook.on_epoch_start(model, epoch)
        for name, p in model.features.named_parameters():
            assert p.requires_grad == (epoch == 1 and name not in fixed), (epoch, name)
