"""Long runs on real data (minutes each): `make test-slow`, or `pytest -m slow`."""

import pytest

from vggnet.run import load_checkpoint
from vggnet.training.config import resolve
from vggnet.training.loop import train


@pytest.mark.slow(reason="a full CIFAR-10 training (about 10 minutes on two cores)")
def test_quick_recipe_reaches_85_percent_on_cifar10(cifar_tar, tmp_path, monkeypatch):
    """The docs' claim (docs/results.md) for the cifar10_quick recipe: >= 85% top-1 on the full CIFAR-10
    test set (about 9 minutes on 2 CPU cores), reached well before the last epoch."""
    monkeypatch.setenv("VGGNET_DATA", str(cifar_tar.parent))
    out = tmp_path / "quick"
    result = train(resolve("cifar10_quick",
                           {"progress": False, "out": str(out)}))
    assert len(result.history) == 20 and result.history[-1]["test_top1"] >= 0.85
    # with the average of the weights (ema), 85% comes well before the end (epoch 12 measured)
    first = next(h["epoch"] for h in result.history if h["test_top1"] >= 0.85)
    assert first <= 14
    _, meta = load_checkpoint(out)
    assert meta.data["test_images"] == 10000


@pytest.mark.slow(reason="trains on real CIFAR-10 at jittered scales (minutes)")
def test_scale_jittered_training_and_multiscale_evaluation(cifar_tar, tmp_path, monkeypatch):
    """The paper's protocol end to end on real data: train with S in [32, 48], then
    multi-scale dense + multi-crop evaluation from the command line, far above chance."""
    from vggnet.cli import main

    monkeypatch.setenv("VGGNET_DATA", str(cifar_tar.parent))
    out = tmp_path / "jitter"
    train(resolve("cifar10_quick",
                  {"epochs": 4, "scale": 32, "scale_max": 48, "tta": False, "progress": False,
                   "train_subset": 20000, "out": str(out)}))
    assert main(["evaluate", str(out), "--protocol", "dense+multicrop", "--scales", "32", "40",
                 "48", "--flip", "--limit", "1000", "--out", str(tmp_path / "eval")]) == 0
    import json

    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["images"] == 1000 and report["top1"] > 0.6
