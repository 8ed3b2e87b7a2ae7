"""Data sets as tensors, batch augmentation, and clear errors for bad folders."""

import tarfile

import numpy as np
import pytest
import torch

from vggnet.errors import DataError
from vggnet.data import TensorLoader, load_splits, split_fraction
from vggnet.data import augment
from vggnet.data.datasets import ImageTensors

from helpers import make_folder_dataset, write_image


def _images(n=8, size=8):
    return torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size)


def test_random_crop_is_a_translation_of_the_reflect_padded_image():
    x = _images()
    g = torch.Generator().manual_seed(0)
    out = augment.random_crop(x, 2, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(len(x)):  # every output is one of the 25 windows of its own image
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    u8 = augment.random_crop(torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), 2, g)
    assert u8.dtype == torch.uint8


def test_flip_mirrors_about_half_and_cutout_zeroes_a_square():
    x = _images(200)
    g = torch.Generator().manual_seed(0)
    out = augment.random_flip(x, g)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    assert all(f or torch.equal(out[i], x[i]) for i, f in enumerate(flipped))
    assert 60 < sum(flipped) < 140
    x = torch.ones(50, 3, 16, 16)
    cut = augment.cutout(x, 4, g)
    zeros = (cut[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 16 and zeros.min() >= 4  # 4x4, clipped at the border


def test_lighting_shifts_each_image_by_a_constant_colour():
    x = torch.rand(4, 3, 8, 8)
    out = augment.lighting(x, 0.1, torch.Generator().manual_seed(0))
    d = out - x
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-6)
    assert d.abs().max() > 0


def test_loader_yields_normalised_batches_covering_every_image():
    data = ImageTensors(torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8),
                        torch.arange(10), [str(i) for i in range(10)])
    loader = TensorLoader(data, 4, mean=[0.5] * 3, std=[0.5] * 3, train=True, crop_padding=1,
                          flip=True)
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10)) and len(loader) == 3
    x, _ = next(iter(TensorLoader(data, 10, mean=[0.5] * 3, std=[0.5] * 3)))
    assert torch.allclose(x, data.images.float() / 255 * 2 - 1)


def test_folder_with_mixed_sizes_and_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = make_folder_dataset(tmp_path / "ds", per_class=10)
    write_image(root / "cat" / "grey.png", "L")
    write_image(root / "dog" / "rgba.png", "RGBA")
    write_image(root / "dog" / "pal.png", "P")
    with pytest.raises(DataError, match="--image-size"):
        load_splits(str(root))
    train, test = load_splits(str(root), image_size=16, val_fraction=0.25)
    assert train.images.shape[1:] == (3, 16, 16) and train.classes == ["cat", "dog"]
    assert len(train) + len(test) == 23 and len(test) == 6
    assert len(list((tmp_path / "cache" / "decoded").glob("*.pt"))) == 1  # cached once
    again, _ = load_splits(str(root), image_size=16, val_fraction=0.25)
    assert torch.equal(again.images, train.images)


def test_train_and_test_folders_and_a_tar(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        make_folder_dataset(tmp_path / "ds" / split, per_class=3, sizes=((12, 12),))
    train, test = load_splits(str(tmp_path / "ds"))
    assert len(train) == 6 and len(test) == 6 and train.images.shape[-1] == 12
    with tarfile.open(tmp_path / "ds.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "ds", arcname=".")
    t_train, t_test = load_splits(str(tmp_path / "ds.tar.gz"))
    assert torch.equal(t_train.images, train.images) and t_test.classes == test.classes


@pytest.mark.parametrize("case", ["no_classes", "empty_class", "missing"])
def test_bad_folders_are_clear(tmp_path, case, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    root.mkdir()
    if case == "no_classes":
        (root / "readme.txt").write_text("nothing")
        match = "no class folders"
    elif case == "empty_class":
        make_folder_dataset(root, per_class=2, sizes=((8, 8),))
        (root / "bird").mkdir()
        match = "bird holds no images"
    else:
        root = tmp_path / "nope"
        match = "not found"
    with pytest.raises(DataError, match=match):
        load_splits(str(root), image_size=8)


def test_corrupt_files_in_a_folder_are_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = make_folder_dataset(tmp_path / "ds", per_class=4, sizes=((8, 8),))
    (root / "cat" / "bad.jpg").write_text("not a jpeg")
    (root / "dog" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        train, test = load_splits(str(root), val_fraction=0.25)
    assert len(train) + len(test) == 8


def test_split_fraction_is_seeded_and_stratified():
    data = ImageTensors(torch.zeros(100, 3, 2, 2, dtype=torch.uint8), torch.arange(100) % 4,
                        list("abcd"))
    a_train, a_test = split_fraction(data, 0.2, seed=3)
    b_train, b_test = split_fraction(data, 0.2, seed=3)
    assert torch.equal(a_test.labels, b_test.labels) and len(a_test) == 20
    assert torch.bincount(a_test.labels).tolist() == [5, 5, 5, 5]


def _labels_of(data):
    """{image bytes: class name}: which class each image ended up in."""
    return {img.numpy().tobytes(): data.classes[int(y)] for img, y in zip(data.images, data.labels)}


def test_the_cache_sees_every_change_to_a_folder(tmp_path, monkeypatch, caplog):
    """A folder read again after a change is decoded again, never served from the cache: an
    image moved to another class folder (mv keeps its size and time: a relabelling), one
    rewritten in the same second, one added. Without a change, the cache answers."""
    import os
    import shutil

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = make_folder_dataset(tmp_path / "ds", per_class=4, sizes=((16, 16),))
    decoded = tmp_path / "cache" / "decoded"

    def read():
        train, test = load_splits(str(root), image_size=16, val_fraction=0.25)
        return {**_labels_of(train), **_labels_of(test)}

    first = read()
    pixels = _png_bytes(root / "dog" / "1.png")
    assert first[pixels] == "dog"
    shutil.move(root / "dog" / "1.png", root / "cat" / "1b.png")
    assert read()[pixels] == "cat"  # relabelled, not the cached "dog"
    stamp = os.stat(root / "cat" / "0.png")
    write_image(root / "cat" / "0.png", size=(16, 16), seed=77)  # same size, new pixels
    os.utime(root / "cat" / "0.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    assert _png_bytes(root / "cat" / "0.png") in read()
    write_image(root / "dog" / "9.png", size=(16, 16), seed=99)
    assert len(read()) == 9
    files = len(list(decoded.glob("*.pt")))
    assert files == 4  # one decode per state of the folder
    caplog.set_level("WARNING", logger="vggnet")
    read()
    assert len(list(decoded.glob("*.pt"))) == files  # unchanged: served from the cache ...
    assert not caplog.records  # ... as it was written, not rebuilt
    write_image(root / "dog" / "10.png", size=(16, 16), seed=98)
    train, _ = load_splits(str(root), image_size=16, val_fraction=0.25, use_cache=False)
    assert len(list(decoded.glob("*.pt"))) == files and len(train) == 8  # nothing written


def _png_bytes(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy().tobytes()


def test_a_tar_archive_is_cached_and_read_again_when_it_changes(tmp_path, monkeypatch, caplog):
    """An archive holding train/ alone: split by the fraction and the seed;
    read twice, the second time from the cache, the same images; rewritten, read anew."""
    import os

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = make_folder_dataset(tmp_path / "ds", per_class=8, sizes=((16, 16),))
    archive = tmp_path / "ds.tar"
    def pack():
        with tarfile.open(archive, "w") as tar:
            for label in ("cat", "dog"):
                tar.add(root / label, arcname=f"train/{label}")

    pack()
    train, test = load_splits(str(archive), image_size=16, val_fraction=0.25, seed=1)
    assert (len(train), len(test)) == (12, 4) and train.classes == ["cat", "dog"]
    caplog.set_level("WARNING", logger="vggnet")
    again, again_test = load_splits(str(archive), image_size=16, val_fraction=0.25, seed=1)
    assert torch.equal(again.images, train.images) and torch.equal(again_test.labels, test.labels)
    assert not caplog.records  # read back from the cache, not rebuilt
    assert len(list((tmp_path / "cache" / "decoded").glob("*.pt"))) == 1
    other, _ = load_splits(str(archive), image_size=16, val_fraction=0.25, seed=2)
    assert not torch.equal(other.images, train.images)  # the seed draws the held-out images
    half, half_test = load_splits(str(archive), image_size=16, val_fraction=0.5, seed=1)
    assert (len(half), len(half_test)) == (8, 8)
    stamp = os.stat(archive)
    write_image(root / "dog" / "0.png", size=(16, 16), seed=55)
    pack()
    os.utime(archive, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    changed, changed_test = load_splits(str(archive), image_size=16, val_fraction=0.25, seed=1,
                                        use_cache=False)
    new = _png_bytes(root / "dog" / "0.png")
    assert new in {**_labels_of(changed), **_labels_of(changed_test)}
    assert len(list((tmp_path / "cache" / "decoded").glob("*.pt"))) == 1  # not cached
    changed, changed_test = load_splits(str(archive), image_size=16, val_fraction=0.25, seed=1)
    assert new in {**_labels_of(changed), **_labels_of(changed_test)}
    assert len(list((tmp_path / "cache" / "decoded").glob("*.pt"))) == 2  # now it is


def test_digits_is_real_and_offline(monkeypatch):
    """The digits are scikit-learn's, read from the file it ships without importing it (1.2 s
    in every process that trains the demo): its 0-16 grey levels as 0-255, bilinear to 32x32,
    grey in three channels, split 80/20 by class."""
    import sys

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
        train, test = load_splits("digits")
    from sklearn.datasets import load_digits

    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (3, 32, 32)
    assert train.classes == [str(d) for d in range(10)]
    bunch = load_digits()
    small = torch.nn.functional.interpolate(torch.tensor(bunch.images).float().unsqueeze(1) / 16,
                                            size=(32, 32), mode="bilinear")
    expected = (small * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    images = torch.cat([train.images, test.images])
    labels = torch.cat([train.labels, test.labels])
    assert images.dtype == torch.uint8
    found = {tuple(img[0].flatten().tolist()): int(y) for img, y in zip(images, labels)}
    for img, y in zip(expected, bunch.target):  # every digit is there, with its label
        assert found[tuple(img[0].flatten().tolist())] == y
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert torch.bincount(test.labels).tolist() == \
        [round(0.2 * n) for n in np.bincount(bunch.target)]


@pytest.mark.slow(reason="decodes all 60,000 real JPEGs (12 s on two cores); every copy "
                         "layout is read in the default suite from small trees")
def test_cifar10_from_the_shared_jpeg_copy(cifar_tar, monkeypatch):
    monkeypatch.setenv("VGGNET_DATA", str(cifar_tar.parent))
    train, test = load_splits("cifar10")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean, _ = train.stats()
    assert mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-4)  # shared/data/README.md


def test_cifar10_absent_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits("cifar10", root=tmp_path)
    text = str(err.value)
    for part in ("--download", "--data-root", "VGGNET_DATA", str(tmp_path / "cifar-10-batches-py"),
                 str(tmp_path / "cifar10-jpeg.tar.gz")):
        assert part in text
    assert "download=True" not in text  # torchvision's own advice names its API, not our CLI


def test_epoch_sampler_order_and_rank_slices():
    """One sampler for the in-memory and streamed loaders: the order is a function of (seed,
    epoch), the ranks' slices partition each global batch, and skip resumes mid-epoch."""
    from vggnet.data.sampler import EpochSampler

    def epoch(rank, world, seed=3, e=2, skip=0):
        s = EpochSampler(50, 4, shuffle=True, seed=seed, rank=rank, world_size=world)
        s.set_epoch(e)
        return [b.tolist() for b in s.batches(skip)]

    assert epoch(0, 1) == epoch(0, 1) and epoch(0, 1) != epoch(0, 1, e=3)
    one = EpochSampler(50, 8, shuffle=True, seed=3, drop_last=True)
    one.set_epoch(2)
    whole = [b.tolist() for b in one.batches()]
    ranks = [epoch(r, 2) for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == 50 // 8  # several processes: full batches only
    for b, r0, r1 in zip(whole, *ranks):
        assert r0 + r1 == b  # rank 0 takes the first half of the global batch, rank 1 the rest
    assert epoch(0, 1, skip=5) == epoch(0, 1)[5:]
    plain = EpochSampler(10, 4, shuffle=False)
    assert [b.tolist() for b in plain.batches()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_run_trained_on_relative_paths_finds_its_data_from_any_directory(tmp_path, monkeypatch):
    """`vggnet train --data photos/` in one directory, `vggnet evaluate` (and export's
    calibration) and `vggnet train --resume` from another: the run recorded where its data
    was, resolved, beside the path as given, so it reads the same images instead of failing
    with 'not found'."""
    from vggnet.cli import main
    from vggnet.evaluation.report import EvalOptions, evaluate_run
    from vggnet.run import load_checkpoint, open_run_data
    from vggnet.training.config import resolve
    from vggnet.training.loop import train

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "project"
    make_folder_dataset(project / "photos", per_class=8, sizes=((32, 32),))
    monkeypatch.chdir(project)
    train(resolve(None, dict(data="photos", width=0.125, epochs=1, batch_size=8, flip=False,
                             progress=False, precision="fp32", out="runs/r")))
    _, meta = load_checkpoint(project / "runs" / "r")
    assert meta.config["data"] == "photos"  # the configuration keeps what was given
    assert meta.data["source_path"] == str((project / "photos").resolve())
    expected = open_run_data(meta, "test")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _, meta = load_checkpoint(project / "runs" / "r")
    assert torch.equal(open_run_data(meta, "test").images, expected.images)
    report = evaluate_run(project / "runs" / "r", EvalOptions(device="cpu", precision="fp32"))
    assert report["images"] == len(expected) and report["data"] == str((project / "photos").resolve())
    assert main(["train", "--resume", "--out", str(project / "runs" / "r"), "--epochs", "2"]) == 0
    assert load_checkpoint(project / "runs" / "r", which="last")[1].epoch == 2


def test_a_recorded_data_root_is_used_as_given_where_it_works_else_as_resolved(tmp_path,
                                                                            monkeypatch):
    from vggnet.run import Preprocessing, RunMetadata

    (tmp_path / "data").mkdir()
    meta = RunMetadata(classes=["a"], preprocessing=Preprocessing(mean=[0.5] * 3, std=[0.5] * 3),
                       config={"data": "cifar10", "data_root": "data"},
                       data={"source": "cifar10", "source_path": None,
                             "root": str(tmp_path / "data")})
    monkeypatch.chdir(tmp_path)
    assert meta.data_root == "data" and meta.data_source == "cifar10"
    monkeypatch.chdir(tmp_path.parent)
    assert meta.data_root == str(tmp_path / "data")
    old = RunMetadata.from_dict({**meta.to_dict(), "data": {"source": "cifar10"}})  # older runs
    assert old.data_root == "data"  # unchanged: the error then names the path it recorded


# --- where the built-in sets are found, without a download ---------------------------------

def _cifar_tree(root, size=(8, 8), per_class=2):
    for split in ("train", "test"):
        make_folder_dataset(root / split, classes=("airplane", "cat"), per_class=per_class,
                            sizes=(size,))
    return root


def _tar(tree, path):
    import tarfile

    with tarfile.open(path, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tree / split, arcname=split)
    return path


def test_the_data_root_is_the_variable_or_the_cache(tmp_path, monkeypatch):
    from vggnet.data.datasets import default_data_root

    monkeypatch.setenv("VGGNET_DATA", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"
    monkeypatch.delenv("VGGNET_DATA")
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "c"))
    assert default_data_root() == tmp_path / "c" / "data"


@pytest.mark.parametrize("layout", ["cifar10", "cifar10-jpeg", "cifar10-jpeg.tar.gz", "."])
def test_cifar10_from_a_local_copy_in_every_layout_it_looks_for(tmp_path, monkeypatch, layout):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    tree = _cifar_tree(tmp_path / "tree")
    root.mkdir()
    if layout.endswith(".tar.gz"):
        _tar(tree, root / layout)
    else:
        tree.rename(root / layout)  # "." : train/ and test/ right in the root
    train, test = load_splits("cifar10", root=root)
    assert len(train) == 4 and len(test) == 4 and train.classes == ["airplane", "cat"]
    assert train.images.shape[-2:] == (8, 8)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.pt"))) == 1  # decoded once, kept
    big, _ = load_splits("cifar10", root=root, image_size=16)
    assert big.images.shape[-2:] == (16, 16)
    monkeypatch.setenv("VGGNET_DATA", str(root))
    assert len(load_splits("CIFAR10")[1]) == 4  # names in any case, the variable's root


def test_an_incomplete_copy_is_passed_over_for_a_complete_one(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    (root / "cifar10" / "test").mkdir(parents=True)  # a copy without train/
    _tar(_cifar_tree(tmp_path / "tree"), root / "cifar10-jpeg.tar.gz")
    train, test = load_splits("cifar10", root=root)
    assert len(train) == len(test) == 4
    assert list((tmp_path / "cache" / "decoded").glob("*.pt"))  # decoded once, kept


class FakeCifar:
    """torchvision's CIFAR class without the files: what it was asked for, and data."""
    base_folder = "cifar-10-batches-py"
    calls: list = []
    images = None

    def __init__(self, root, train, download):
        type(self).calls.append((root, train, download))
        n = 6 if train else 2
        self.data = (type(self).images[:n] if type(self).images is not None else
                     np.full((n, 32, 32, 3), 7 if train else 9, np.uint8))
        self.targets = [i % 2 for i in range(n)]
        self.classes = ["airplane", "automobile"]


def test_cifar10s_official_batches_are_read_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    Fake = type("Fake", (FakeCifar,), {"calls": []})
    monkeypatch.setattr(tvd, "CIFAR10", Fake)
    monkeypatch.setattr(tvd, "CIFAR100", None)
    train, test = load_splits("cifar10", root=tmp_path)
    assert Fake.calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    load_splits("cifar10", root=tmp_path, download=True)
    assert Fake.calls[-2:] == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert int(train.images.max()) == 7 and int(test.images.min()) == 9
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1] and train.labels.dtype == torch.long
    assert train.classes == ["airplane", "automobile"]
    small, _ = load_splits("cifar10", root=tmp_path, image_size=16)
    assert small.images.shape == (6, 3, 16, 16) and small.images.dtype == torch.uint8
    assert int(small.images.min()) == int(small.images.max()) == 7  # a flat image stays flat


def test_official_batches_are_resized_as_image_files_are(tmp_path, monkeypatch):
    """A resized CIFAR batch holds what decoding the same images from files at that size
    gives (bilinear, antialiased), to one level of rounding."""
    import torchvision.datasets as tvd
    from PIL import Image

    from vggnet.io import resize_shorter_side

    rng = np.random.default_rng(0)
    Fake = type("Fake", (FakeCifar,), {"calls": [],
                                        "images": rng.integers(0, 256, (6, 32, 32, 3), np.uint8)})
    monkeypatch.setattr(tvd, "CIFAR100", Fake)
    monkeypatch.setattr(tvd, "CIFAR10", None)
    train, _ = load_splits("cifar100", root=tmp_path, image_size=16)
    for got, raw in zip(train.images, Fake.images):
        want = np.asarray(resize_shorter_side(Image.fromarray(raw), 16)).astype(int)
        assert np.abs(got.permute(1, 2, 0).numpy().astype(int) - want).max() <= 1


def test_imagenette_copies_are_found_in_order_and_a_missing_one_named(tmp_path, monkeypatch):
    from vggnet.data.datasets import IMAGENETTE_COPIES, find_imagenette

    with pytest.raises(DataError) as info:
        find_imagenette(tmp_path, download=False)
    assert all(name in str(info.value) for name in IMAGENETTE_COPIES)
    assert "--download" in str(info.value) and "VGGNET_DATA" in str(info.value)
    (tmp_path / "imagenette2").mkdir()  # a folder without train/ is not a copy
    with pytest.raises(DataError):
        find_imagenette(tmp_path, download=False)
    (tmp_path / "imagenette2" / "x" / "train").mkdir(parents=True)
    assert find_imagenette(tmp_path, False) == tmp_path / "imagenette2"
    (tmp_path / "imagenette2-160.tgz").write_bytes(b"x")
    assert find_imagenette(tmp_path, False) == tmp_path / "imagenette2-160.tgz"  # earlier in order
    (tmp_path / "imagenette-224.tar.gz").write_bytes(b"x")
    assert find_imagenette(tmp_path, False) == tmp_path / "imagenette-224.tar.gz"


def test_imagenette_is_downloaded_through_torchvision_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from vggnet.data.datasets import find_imagenette

    calls = []
    monkeypatch.setattr(tvd, "Imagenette", lambda root, split, size, download:
                        calls.append((root, split, size, download)))
    root = tmp_path / "new" / "data"  # folders made as needed
    got = find_imagenette(root, download=True)
    assert got == root / "imagenette2-320" and root.is_dir()
    assert calls == [(str(root), "train", "320px", True), (str(root), "val", "320px", False)]
    assert find_imagenette(root, download=True) == got  # the folder may exist already


def test_imagenette_by_name_reads_the_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "imagenette2-320"
    for split in ("train", "val"):
        make_folder_dataset(tree / split, classes=("n01", "n02"), per_class=2, sizes=((12, 10),))
    train, val = load_splits("imagenette", root=tmp_path, image_size=8)
    assert len(train) == len(val) == 4 and train.images.shape[-2:] == (8, 8)


def test_a_tar_takes_images_at_split_class_image_only(tmp_path, monkeypatch):
    """Members elsewhere (a top-level file, an image one level down, folders) are left out;
    an unreadable image is skipped with a warning naming the archive and split."""
    import io as bytes_io
    import tarfile

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    tree = _cifar_tree(tmp_path / "tree")
    (tree / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    (tree / "notes").mkdir()
    (tree / "notes" / "x.png").write_bytes((tree / "train" / "cat" / "0.png").read_bytes())
    path = tmp_path / "d.tar"
    with tarfile.open(path, "w") as tf:
        for split in ("train", "test", "notes"):
            tf.add(tree / split, arcname=f"./{split}")
        tf.add(tree / "train" / "cat" / "0.png", arcname="top.png")
        info = tarfile.TarInfo("train/dog/readme.txt")
        info.size = 2
        tf.addfile(info, bytes_io.BytesIO(b"hi"))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) in d.tar:train"):
        train, test = load_splits(str(path))
    assert len(train) == 4 and len(test) == 4 and train.classes == ["airplane", "cat"]


def test_a_train_folder_alone_is_split_by_the_fraction_and_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    make_folder_dataset(tmp_path / "ds" / "train", per_class=8, sizes=((8, 8),))
    (tmp_path / "ds" / "other").mkdir()  # neither a test nor a val split
    train, held = load_splits(str(tmp_path / "ds"), val_fraction=0.25, seed=3)
    assert len(train) == 12 and len(held) == 4 and sorted(held.labels.tolist()) == [0, 0, 1, 1]
    again, held_again = load_splits(str(tmp_path / "ds"), val_fraction=0.25, seed=3)
    assert torch.equal(held.images, held_again.images)
    _, other = load_splits(str(tmp_path / "ds"), val_fraction=0.25, seed=4)
    assert not torch.equal(held.images, other.images)
    _, half = load_splits(str(tmp_path / "ds"), val_fraction=0.5, seed=3)
    assert len(half) == 8
    # a class that happens to be called train (images of trains, buses and cars) is a class
    vehicles = make_folder_dataset(tmp_path / "vehicles", classes=("bus", "car", "train"),
                                   per_class=4, sizes=((8, 8),))
    train, held = load_splits(str(vehicles), val_fraction=0.25)
    assert train.classes == ["bus", "car", "train"] and len(held) == 3


def test_splits_with_other_classes_name_the_ones_missing_on_each_side(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    make_folder_dataset(tmp_path / "ds" / "train", classes=("cat", "dog", "fox"), per_class=2,
                        sizes=((8, 8),))
    make_folder_dataset(tmp_path / "ds" / "val", classes=("cat", "dog", "owl"), per_class=2,
                        sizes=((8, 8),))
    with pytest.raises(DataError) as info:
        load_splits(str(tmp_path / "ds"))
    message = str(info.value)
    assert "the test split has no fox" in message and "train/ has no owl" in message
    assert "cat" not in message.split("differ")[1] and "dog" not in message.split("differ")[1]


def test_classes_too_small_to_learn_are_named_with_their_counts(tmp_path, monkeypatch):
    """Counted on the training split: a class with one training image is named, one with
    two is not, nor are the test split's counts."""
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    make_folder_dataset(root / "train", classes=("ant", "bee", "cow"), per_class=2,
                        sizes=((8, 8),))
    make_folder_dataset(root / "test", classes=("ant", "bee", "cow"), per_class=1,
                        sizes=((8, 8),))
    (root / "train" / "cow" / "1.png").unlink()  # the last class: 1 training image
    with pytest.warns(UserWarning) as caught:
        load_splits(str(root))
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{root}: class(es) with fewer than 2 training images: cow (1);")
    # the last class left with no training image at all (its only one unreadable) is named too
    (root / "train" / "cow" / "0.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as caught:
        load_splits(str(root))
    assert any("fewer than 2 training images: cow (0)" in str(w.message) for w in caught)
    import warnings

    make_folder_dataset(root / "train", classes=("ant", "bee", "cow"), per_class=2,
                        sizes=((8, 8),))  # two each again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        load_splits(str(root))


def test_unreadable_files_are_named_and_other_files_and_hidden_folders_left_alone(tmp_path,
                                                                                  monkeypatch):
    import warnings

    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    root = make_folder_dataset(tmp_path / "ds", per_class=4, sizes=((8, 8),))
    (root / "cat" / "notes.txt").write_text("not an image, not a complaint")
    (root / ".git").mkdir()
    write_image(root / ".git" / "x.png")  # a hidden folder is no class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = load_splits(str(root), val_fraction=0.25)
    assert train.classes == ["cat", "dog"] and len(train) + len(test) == 8
    (root / "cat" / "bad.jpg").write_text("not a jpeg")
    with pytest.warns(UserWarning) as caught:
        load_splits(str(root), val_fraction=0.25)
    assert f"{root / 'cat' / 'bad.jpg'}: not an image" in str(caught[0].message)


def test_an_archive_unpacked_into_one_top_folder_is_found_inside_it(tmp_path, monkeypatch):
    """imagenette2-320/train/... unpacked into a folder of its own: the folder given, its
    only (visible) subfolder holds the splits."""
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    outer = tmp_path / "download"
    for split in ("train", "val"):
        make_folder_dataset(outer / "imagenette2-320" / split, per_class=2, sizes=((8, 8),))
    (outer / ".DS_Store_folder").mkdir()  # hidden: not a second top folder
    (outer / "README.txt").write_text("unpacked")
    train, val = load_splits(str(outer))
    assert len(train) == len(val) == 4 and train.classes == ["cat", "dog"]
    (outer / "second").mkdir()  # two top folders: no longer one archive's
    with pytest.raises(DataError):
        load_splits(str(outer))


def test_the_decoded_size_is_estimated_from_the_names_alone(tmp_path, monkeypatch):
    """Before decoding (to warn that a set will not fit in memory): the images of a folder or
    a tar, counted by name at any depth, times 3 x size x size bytes; None where that cannot
    be known (no image size, a built-in set's name, a file that is no archive)."""
    from vggnet.data.survey import estimate_decoded_bytes

    root = make_folder_dataset(tmp_path / "ds", per_class=3, sizes=((8, 8),))
    write_image(root / "cat" / "deeper" / "x.jpg", size=(8, 8))
    (root / "cat" / "notes.txt").write_text("not an image")
    assert estimate_decoded_bytes(root, 32) == (7, 7 * 3 * 32 * 32)
    assert estimate_decoded_bytes(str(root), 10) == (7, 7 * 300)
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="train")
    assert estimate_decoded_bytes(archive, 16) == (7, 7 * 3 * 16 * 16)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert estimate_decoded_bytes("~/ds.tar", 16) == (7, 7 * 768)  # the user's ~ expanded
    assert estimate_decoded_bytes(root, None) is None
    assert estimate_decoded_bytes("digits", 32) is None
    assert estimate_decoded_bytes(tmp_path / "missing", 32) is None
    assert estimate_decoded_bytes(root / "cat" / "notes.txt", 32) is None


def test_channel_statistics_are_of_pixels_in_0_to_1_to_four_places():
    """The mean and std a run normalises with (saved in its checkpoints): per channel, of
    the pixels divided by 255, rounded to 4 places."""
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255                      # red: all 1
    images[0, 1], images[1, 1] = 51, 102    # green: 0.2 and 0.4, half each
    images[:, 2, 0, 0] = 1                  # blue: 1/255 in a quarter of the pixels
    mean, std = ImageTensors(images, torch.zeros(2, dtype=torch.long), ["a"]).stats()
    assert mean == [1.0, 0.3, 0.001]        # 1/1020 = 0.00098 to four places
    assert std == [0.0, 0.1069, 0.0018]     # sample std (n - 1) of the 8 pixels


def test_image_sizes_are_surveyed_from_headers_spread_over_the_training_files(tmp_path,
                                                                             monkeypatch):
    """What picks a folder's decode size: (width, height) of up to ``limit`` images, from
    train/ where there is one, spread evenly over the sorted files, unreadable ones left out;
    a tar's first ``limit`` images; None for built-in sets and missing paths."""
    from vggnet.data.survey import survey_sizes

    root = tmp_path / "ds"
    for i in range(10):  # widths 10..19, in name order
        write_image(root / "train" / "a" / f"{i:02d}.png", size=(10 + i, 8))
    write_image(root / "test" / "a" / "t.png", size=(99, 99))  # never surveyed
    (root / "train" / "a" / "05.png").write_bytes(b"broken")    # left out
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "a" / "0.txt").write_text("first in name order, and not an image")
    assert survey_sizes(root) == [(10 + i, 8) for i in range(10) if i != 5]
    assert survey_sizes(root, limit=3) == [(10, 8), (13, 8), (16, 8)]  # every third, three
    assert survey_sizes(root, limit=20) == survey_sizes(root)
    flat = tmp_path / "flat"  # class folders without train/: all of them
    write_image(flat / "b" / "x.png", size=(7, 5))
    write_image(flat / "c" / "y.jpg", size=(6, 4))
    assert survey_sizes(str(flat)) == [(7, 5), (6, 4)]
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tar:
        for i in (0, 1, 2, 3):
            tar.add(root / "train" / "a" / f"{i:02d}.png", arcname=f"train/a/{i:02d}.png")
        tar.add(root / "train" / "a" / "notes.txt", arcname="train/a/notes.txt")
    assert survey_sizes(archive) == [(10, 8), (11, 8), (12, 8), (13, 8)]
    assert survey_sizes(archive, limit=2) == [(10, 8), (11, 8)]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert survey_sizes("~/flat") == [(7, 5), (6, 4)]
    assert survey_sizes("digits") is None and survey_sizes("CIFAR10") is None
    monkeypatch.chdir(tmp_path)  # a built-in set's name means the set, even beside a folder
    write_image(tmp_path / "Digits" / "a" / "x.png", size=(5, 5))
    assert survey_sizes("Digits") is None
    assert survey_sizes(tmp_path / "missing") is None
