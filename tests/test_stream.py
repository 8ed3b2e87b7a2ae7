"""Streaming ImageFolder data (ImageNet-sized sets): per-image scale augmentation in worker
processes, the same loop and checkpoints, and whole-image evaluation under the protocols."""

import json

import pytest
import torch

from vggnet.cli import main
from vggnet.data import load_splits
from vggnet.data.stream import FolderImages, StreamLoader, stream_splits
from vggnet.run import load_checkpoint
from vggnet.errors import ConfigError
from vggnet.training.config import resolve
from vggnet.training.loop import train
from vggnet.evaluation.protocols import evaluate_protocol, evaluate_protocol_folder

from helpers import write_image

CLASSES = ("ant", "bee", "cow")


def _tree(root, sizes=((48, 36), (40, 56), (64, 64)), per_class=(6, 3)):
    for split, n in zip(("train", "val"), per_class):
        for ci, c in enumerate(CLASSES):
            for i in range(n):
                ext = ".jpg" if i % 2 else ".png"
                write_image(root / split / c / f"{i}{ext}", size=sizes[i % len(sizes)],
                            seed=1000 * ci + 10 * i + (split == "val"))
    return root


def test_folder_images_rescale_crop_and_keep_labels(tmp_path):
    root = _tree(tmp_path)
    train_dir, val_dir = stream_splits(root)
    data = FolderImages(train_dir, train=True, crop=32, scale=(36, 44))
    assert data.classes == list(CLASSES) and len(data) == 18
    for i in range(len(data)):
        x, y = data[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == data.labels[i]
    whole = FolderImages(val_dir, train=False, crop=None, test_scale=40)
    shapes = {tuple(whole[i][0].shape) for i in range(len(whole))}
    assert shapes == {(3, 40, 53), (3, 56, 40), (3, 40, 40)}  # shorter side 40, aspect kept


def test_stream_loader_order_shards_and_normalises(tmp_path):
    data = FolderImages(stream_splits(_tree(tmp_path))[0], train=True, crop=32, scale=(36, 36))
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, train=True, workers=0, world_size=2,
                  shuffle_seed=3)
    ranks = [StreamLoader(data, 4, rank=r, **kwargs) for r in range(2)]
    assert len(ranks[0]) == 18 // 8
    seen = []
    for loader in ranks:
        for x, y in loader.batches():
            assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
            assert -2.01 <= x.min() and x.max() <= 2.01  # (0..1 - 0.5) / 0.25
            seen += y.tolist()
    assert len(seen) == 16
    # the same epoch replays the same order; resuming after one batch skips exactly one
    a = [y.tolist() for _, y in ranks[0].batches()]
    b = [y.tolist() for _, y in ranks[0].batches(skip=1)]
    assert b == a[1:]


def test_stream_augmentation_is_a_function_of_seed_epoch_and_image(tmp_path):
    """A resumed epoch (skip) sees the very pixels of an uninterrupted one, whichever worker
    process decodes which image; a new epoch draws new augmentations."""
    data = FolderImages(stream_splits(_tree(tmp_path))[0], train=True, crop=32, scale=(36, 48))
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, train=True, shuffle_seed=5)
    serial = [x for x, _ in StreamLoader(data, 4, workers=0, **kwargs).batches()]
    parallel = StreamLoader(data, 4, workers=2, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(serial, [x for x, _ in parallel.batches()]))
    resumed = [x for x, _ in parallel.batches(skip=2)]
    assert len(resumed) == len(serial) - 2
    assert all(torch.equal(a, b) for a, b in zip(serial[2:], resumed))
    parallel.set_epoch(1)
    assert not torch.equal(serial[0], next(iter(parallel.batches()))[0])


def test_streamed_training_writes_a_normal_run_and_evaluates_whole_images(tmp_path, capsys):
    root = _tree(tmp_path / "data")
    (root / "train" / "ant" / "broken.jpg").write_text("not an image")  # skipped, with a warning
    out = tmp_path / "run"
    result = train(resolve(None, dict(
        data=str(root), stream=True, workers=2, scale=36, scale_max=44, crop_size=32,
        lighting=0.1, model="vgg11", width=0.125, fc_dim=32, head="classifier", batch_size=6,
        epochs=2, progress=False, out=str(out))))
    assert len(result.history) == 2
    model, meta = load_checkpoint(out)
    assert meta.classes == list(CLASSES)
    assert meta.preprocessing.input_size == 32 and meta.preprocessing.test_scale == 40
    assert meta.data == {"source": str(root), "train_images": 19, "test_images": 9,
                         "source_path": str(root.resolve()), "root": None}

    assert main(["evaluate", str(out), "--protocol", "dense+multicrop", "--scales", "32", "40",
                 "--grid", "2", "--flip", "--workers", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 9 and report["protocol"] == "dense+multicrop"
    assert 0 <= report["top1"] <= report["top5"] <= 1


def test_folder_evaluation_equals_the_in_memory_protocol(tmp_path):
    """On square images already at the test scale, reading them one by one from disk gives
    the same result as the batched in-memory protocol."""
    root = _tree(tmp_path, sizes=((32, 32),), per_class=(2, 4))
    _, test = load_splits(str(root), use_cache=False)
    torch.manual_seed(0)
    from vggnet import create_model

    model = create_model("vgg11", width=0.125, fc_dim=32, num_classes=3).eval()
    kw = dict(protocol="dense", scales=[32, 40], crop=32, flip=True, mean=[0.5] * 3,
              std=[0.25] * 3)
    batched = evaluate_protocol(model, test.images, test.labels, **kw)
    streamed = evaluate_protocol_folder(model, root / "val", workers=0, **kw)
    assert streamed["n"] == batched["n"] == 12
    assert streamed["confusion"] == batched["confusion"]
    assert streamed["loss"] == pytest.approx(batched["loss"], abs=1e-5)


def test_stream_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="stream reads an ImageFolder tree"):
        resolve(None, dict(stream=True, data="cifar10", crop_size=32))
    with pytest.raises(ConfigError, match="stream needs crop_size"):
        resolve(None, dict(stream=True, data=str(tmp_path)))
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="needs train/ and val/"):
        stream_splits(tmp_path)
