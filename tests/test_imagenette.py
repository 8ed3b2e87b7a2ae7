"""ImageNet-style data: tar input with one top folder, WordNet ids shown with names, memory
choice, awkward photos, clear messages, and smoke runs of the ImageNet recipes on real
Imagenette photos (checkpoint, then resume)."""

import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggnet.cli import main
from vggnet.data import load_splits
from vggnet.data.datasets import find_imagenette
from vggnet.data.survey import estimate_decoded_bytes
from vggnet.data.names import imagenet_classes, matches, readable
from vggnet.errors import DataError

from helpers import write_image

ROOT = Path(__file__).resolve().parents[1]
IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette-224.tar.gz"
WNIDS = ("n01440764", "n03888257")


def _tree(root: Path, per_class=4, val_classes=WNIDS, top="imagenette") -> Path:
    for split, classes in (("train", WNIDS), ("val", val_classes)):
        for ci, wnid in enumerate(classes):
            for i in range(per_class if split == "train" else 2):
                write_image(root / top / split / wnid / f"{i}.JPEG", size=(48, 40),
                            seed=ci * 10 + i)
    return root


def _tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder / "imagenette", arcname="imagenette")
    return out


def test_the_bundled_table_names_imagenets_classes():
    table = imagenet_classes()
    assert len(table) == 1000 and list(table) == sorted(table)
    assert table["n01440764"] == "tench" and table["n03888257"] == "parachute"
    assert readable(["n01440764", "cat"]) == ["n01440764 tench", "cat"]
    assert matches("n03888257 parachute", "parachute")
    assert matches("n03888257 parachute", "n03888257") and not matches("cat", "dog")


def test_a_tar_with_one_top_folder_and_a_folder_alike(tmp_path):
    tree = _tree(tmp_path / "src")
    tar = _tar(tree, tmp_path / "nette.tar.gz")
    for source in (tar, tree, tree / "imagenette"):  # one top folder is looked into
        train, val = load_splits(str(source), image_size=32, use_cache=False)
        assert train.classes == list(WNIDS) and len(train) == 8 and len(val) == 4
        assert tuple(train.images.shape[1:]) == (3, 32, 32)
    assert estimate_decoded_bytes(str(tar), 32) == (12, 12 * 3 * 32 * 32)


def test_imagenette_by_name_finds_a_local_copy_or_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="imagenette not found under .*--download"):
        find_imagenette(tmp_path, download=False)
    _tar(_tree(tmp_path / "src"), tmp_path / "imagenette-224.tar.gz")
    train, _ = load_splits("imagenette", root=tmp_path, image_size=32, use_cache=False)
    assert train.classes == list(WNIDS)


def test_val_missing_a_class_and_a_one_image_class_are_named(tmp_path):
    tree = _tree(tmp_path / "a", val_classes=WNIDS[:1])
    with pytest.raises(DataError, match=f"the test split has no {WNIDS[1]}"):
        load_splits(str(tree), image_size=32, use_cache=False)
    tree = _tree(tmp_path / "b", per_class=1)
    with pytest.warns(UserWarning, match="fewer than 2 training images: n01440764 \\(1\\)"):
        load_splits(str(tree), image_size=32, use_cache=False)


def test_awkward_photos_train_and_unreadable_ones_are_skipped_with_one_warning(tmp_path):
    tree = _tree(tmp_path / "src")
    cls = tree / "imagenette" / "train" / WNIDS[0]
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(cls / "cmyk.JPEG")
    Image.fromarray(rgb).convert("L").save(cls / "grey.JPEG")
    Image.fromarray(rgb).save(cls / "progressive.JPEG", progressive=True)
    Image.fromarray(rgb[:, :9]).save(cls / "thin.JPEG")  # oddly sized: 9 x 50
    full = (cls / "progressive.JPEG").read_bytes()
    (cls / "truncated.JPEG").write_bytes(full[: len(full) // 3])
    (cls / "empty.JPEG").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = load_splits(str(tree), image_size=32, use_cache=False)
    skipped = [w for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and "empty.JPEG" in str(skipped[0].message)
    assert len(train) == 8 + 4 + (1 if "truncated" not in str(skipped[0].message) else 0)


def test_a_data_set_over_the_memory_budget_is_streamed_or_refused(tmp_path, monkeypatch, caplog):
    from vggnet.training.config import resolve
    from vggnet.training.setup import _too_big_for_memory

    tree = _tree(tmp_path / "src")
    tar = _tar(tree, tmp_path / "nette.tar.gz")
    cfg = resolve(None, dict(data=str(tree), image_size=32, crop_size=32, scale=32))
    with caplog.at_level("INFO", logger="vggnet"):
        assert not _too_big_for_memory(cfg)
    assert "data in memory: 12 images" in caplog.text
    monkeypatch.setenv("VGGNET_MEMORY_GB", "0.00001")
    with caplog.at_level("INFO", logger="vggnet"):
        assert _too_big_for_memory(cfg)
    assert "data streamed" in caplog.text
    with pytest.raises(DataError, match="extract the archive and train with --stream"):
        _too_big_for_memory(resolve(None, dict(data=str(tar), image_size=32)))


def test_predictions_print_wordnet_ids_with_names(tmp_path, capsys):
    tree = _tree(tmp_path / "src")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tree), "--image-size", "32", "--width", "0.125",
                 "--epochs", "1", "--batch-size", "4", "--progress", "false",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    photo = tree / "imagenette" / "val" / WNIDS[1] / "0.JPEG"
    assert main(["predict", str(out), str(photo), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "n01440764 tench" in printed and "n03888257 parachute" in printed


def _imagenette_folder(tmp_path: Path, per_class: int) -> Path:
    """A small ImageFolder of real Imagenette photos (every class), unpacked from the tar."""
    counts: dict = {}
    root = tmp_path / "nette"
    with tarfile.open(IMAGENETTE) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 4:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) < (per_class if parts[-3] == "train" else 1):
                counts[key] = counts.get(key, 0) + 1
                dest = root / parts[-3] / parts[-2] / parts[-1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tf.extractfile(m).read())
    return root


@pytest.mark.skipif(not IMAGENETTE.is_file(), reason="needs ../shared/data/imagenette-224.tar.gz")
def test_imagenet_recipes_start_checkpoint_and_resume_on_imagenette(tmp_path, capsys):
    """Every ImageNet recipe, as shipped, on real photos: one epoch of a few steps (narrow
    widths so that it takes seconds), a checkpoint, then a resume to the second epoch."""
    from vggnet.training.config import list_recipes

    data = _imagenette_folder(tmp_path, per_class=2)
    recipes = [r for r in list_recipes() if r.startswith("imagenet/")]
    assert len(recipes) >= 10
    for name in recipes:
        out = tmp_path / name.replace("/", "_")
        common = ["--data", str(data), "--width", "0.0625", "--fc-dim", "16", "--epochs", "2",
                  "--batch-size", "10", "--eval-batch-size", "10", "--workers", "0",
                  "--weights", "none", "--init-from", "none", "--progress", "false",
                  "--out", str(out)]
        assert main(["train", "--config", name, *common, "--stop-after", "1"]) == 0, name
        assert (out / "last.state.pt").is_file() and (out / "best.safetensors").is_file()
        assert main(["train", "--config", name, *common, "--resume", "true"]) == 0, name
    printed = capsys.readouterr().out
    assert printed.count("after 2 epochs") == len(recipes)  # each resumed to its end
