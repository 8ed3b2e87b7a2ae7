"""Training end to end on real data: accuracy, checkpoints, resume, evaluate and predict."""

import json

import pytest
import torch

from vggnet.cli import main
from vggnet.run import load_checkpoint
from vggnet.errors import ConfigError
from vggnet.training.config import resolve
from vggnet.errors import TrainingError
from vggnet.training.schedule import lr_factor
from vggnet.training.loop import train

DIGITS = dict(data="digits", model="vgg11_bn", width=0.25, head="linear", batch_size=64,
              lr=0.05, crop_padding=2, flip=False, progress=False)


def _cfg(tmp_path, **kw):
    return resolve(None, {**DIGITS, "out": str(tmp_path / "run"), **kw})


def test_digits_trains_well_and_writes_a_complete_run(tmp_path):
    result = train(_cfg(tmp_path, epochs=4, label_smoothing=0.1))
    assert result.best_top1 > 0.9  # 10 classes: chance is 0.1
    run = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json",
                 "last.state.pt", "metrics.jsonl", "metrics.csv", "curves.png", "config.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    meta = json.loads((run / "best.json").read_text())
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["preprocessing"]["input_size"] == 32 and len(meta["preprocessing"]["mean"]) == 3
    assert meta["versions"]["torch"] == torch.__version__ and meta["config"]["epochs"] == 4
    model, _ = load_checkpoint(run)
    assert model.model_config["width"] == 0.25 and not model.training


def test_resume_continues_exactly(tmp_path):
    """Interrupted after epoch 1 and resumed == uninterrupted (CPU, deterministic)."""
    full = train(_cfg(tmp_path / "a", epochs=3, deterministic=True, dropout=0.1))
    first = train(_cfg(tmp_path / "b", epochs=3, deterministic=True, dropout=0.1, stop_after=1))
    assert first.interrupted and len(first.history) == 1
    resumed = train(_cfg(tmp_path / "b", epochs=3, deterministic=True, dropout=0.1, resume=True))
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in full.history]
    a, _ = load_checkpoint(tmp_path / "a" / "run", which="last")
    b, _ = load_checkpoint(tmp_path / "b" / "run", which="last")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_cli_resume_reads_the_runs_own_config(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--data", "digits", "--width", "0.125", "--epochs", "2", "--stop-after", "1",
            "--flip", "false", "--progress", "false", "--out", out]
    assert main(args) == 0
    assert "stopped early" in capsys.readouterr().out
    assert main(["train", "--resume", "--out", out]) == 0
    assert "after 2 epochs" in capsys.readouterr().out


def test_evaluate_with_shift_tta_reproduces_the_training_evaluation(tmp_path, capsys):
    """`vggnet evaluate --flip --tta-shift N` from the checkpoint alone gives what the run's
    own evaluation (tta, tta_shift) gave; shifts with other protocols are refused."""
    result = train(_cfg(tmp_path, epochs=2, tta=True, tta_shift=1, width=0.125))
    run = str(tmp_path / "run")
    assert main(["evaluate", run, "--flip", "--tta-shift", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tta_shift"] == 1 and report["flip"]
    assert report["top1"] == pytest.approx(result.best_top1, abs=1e-6)
    assert main(["evaluate", run, "--json"]) == 0  # without: a different figure
    assert json.loads(capsys.readouterr().out)["loss"] != pytest.approx(report["loss"])
    assert main(["evaluate", run, "--protocol", "dense", "--tta-shift", "1"]) == 2
    assert "single protocol only" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingError, match=r"epoch \d+, step \d+.*--lr"):
        train(_cfg(tmp_path, epochs=2, lr=1e12, weight_decay=0.0, label_smoothing=0.0,
                   optimizer="sgd", momentum=0.0))


def test_transfer_learning_with_frozen_features(tmp_path):
    train(_cfg(tmp_path / "src", epochs=1))
    src, _ = load_checkpoint(tmp_path / "src" / "run")
    cfg = _cfg(tmp_path / "dst", epochs=1, weights=str(tmp_path / "src" / "run"),
               freeze="features", lr=0.01)
    train(cfg)
    dst, _ = load_checkpoint(tmp_path / "dst" / "run", which="last")
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sd_src[k], sd_dst[k]) for k in sd_src if k.startswith("features."))
    assert not torch.equal(sd_src["head.fc.weight"], sd_dst["head.fc.weight"])


def test_schedules():
    f = [lr_factor("onecycle", s, 100, 10, epochs=10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and max(f) == pytest.approx(1.0, abs=0.05) and f[-1] < 0.02
    assert [lr_factor("step", e * 10, 100, 10, step_epochs=4, gamma=0.1) for e in (0, 3, 4, 8)] \
        == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor("cosine", 0, 100, 10, warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor("cosine", 99, 100, 10, warmup_epochs=1) < 0.01


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = 3\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        resolve(bad)
    bad.write_text('epochs = "many"\n')
    with pytest.raises(ConfigError, match="epochs must be int"):
        resolve(bad)
    bad.write_text('schedule = "linear"\n')
    with pytest.raises(ConfigError, match="schedule must be one of"):
        resolve(bad)
    good = tmp_path / "good.toml"
    good.write_text('[optim]\nepochs = 3\nlr = 0.2\n')
    cfg = resolve(good, {"lr": "0.3"})
    assert cfg.epochs == 3 and cfg.lr == 0.3  # flags override the recipe


def test_shipped_recipes_are_valid(tmp_path):
    from vggnet.training.config import list_recipes

    recipes = list_recipes()
    assert len(recipes) >= 16
    (tmp_path / "train").mkdir()  # the ImageNet recipes need the user's ImageNet folder
    for name in recipes:
        paths = ({"data": str(tmp_path), "weights": None, "init_from": None}
                 if name.startswith("imagenet/") else {})
        assert resolve(name, paths).epochs >= 1


def test_real_cifar10_subset_train_evaluate_predict(cifar_tar, tmp_path, monkeypatch, capsys):
    """A short run on real CIFAR-10 images, then evaluate and predict from the checkpoint."""
    monkeypatch.setenv("VGGNET_DATA", str(cifar_tar.parent))
    out = tmp_path / "run"
    assert main(["train", "--data", "cifar10", "--model", "vgg11_bn", "--width", "0.25",
                 "--epochs", "3", "--train-subset", "6000", "--test-subset", "1000",
                 "--batch-size", "128", "--lr", "0.1", "--label-smoothing", "0.1",
                 "--progress", "false", "--out", str(out)]) == 0
    meta = json.loads((out / "best.json").read_text())
    assert meta["metrics"]["test_top1"] > 0.35  # chance is 0.10
    capsys.readouterr()
    assert main(["evaluate", str(out), "--limit", "1000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] > 0.35 and report["images"] == 1000 and len(report["per_class"]) == 10
    from PIL import Image

    with Image.open(out / "confusion.png") as png:  # a drawn matrix, not an empty canvas
        assert png.format == "PNG" and min(png.size) >= 300
        assert len(png.convert("L").getcolors(1 << 16)) > 50
    assert main(["samples", "cifar10", "--out", str(tmp_path / "imgs"), "--count", "5"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "imgs").iterdir()) == [".png"] * 5
    # predict on test images written at their own size reproduces the model on those pixels
    from vggnet.data import load_splits
    from vggnet.data.augment import normalize

    _, test = load_splits("cifar10")
    test = test.subset(5, seed=7)
    for i in range(5):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"t{i}.png")
    capsys.readouterr()
    assert main(["predict", str(out), *(str(tmp_path / f"t{i}.png") for i in range(5)),
                 "--json", "--top-k", "3", "--precision", "fp32"]) == 0
    preds = json.loads(capsys.readouterr().out)
    model, meta = load_checkpoint(out)
    with torch.no_grad():
        probs = model(normalize(test.images, meta.preprocessing.mean, meta.preprocessing.std)
                      ).softmax(1)
    for p, row in zip(preds, probs):
        top = row.topk(3)
        assert [q["class"] for q in p["top"]] == [test.classes[j] for j in top.indices]
        assert [q["probability"] for q in p["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)
