"""The decoded-data cache: built once, read back exactly, keyed on what changes the data, and
never trusted when its file is truncated, corrupted, loses its checksum or does not load; a
cache that cannot be written is skipped with a warning."""

import errno
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import vggnet.data.cache as cache_module
from vggnet.data.cache import cache_dir, cache_key, cached_splits, source_fingerprint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor
    classes: list


def _builder(counter):
    def build():
        counter.append(1)
        return {"train": Split(torch.arange(24, dtype=torch.uint8).reshape(2, 3, 2, 2),
                               torch.tensor([0, 1]), ["a", "b"]),
                "test": Split(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.tensor([1]),
                              ["a", "b"])}
    return build


def test_the_cache_folder_is_the_variable_or_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VGGNET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vggnet"


def test_keys_differ_for_anything_that_changes_the_data(tmp_path):
    key = cache_key("dir", "/data", 10, 123, 32)
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == cache_key("dir", "/data", 10, 123, 32)
    assert len({key, cache_key("dir", "/data", 10, 123, 64), cache_key("dir", "/data", 11, 123, 32),
                cache_key("tar", "/data", 10, 123, 32), cache_key("dir", "/data", 10, 123, None)}) == 5
    f = tmp_path / "a.tar"
    f.write_bytes(b"1234")
    path, size, mtime = source_fingerprint(f)
    assert path == str(f.resolve()) and size == 4 and mtime == f.stat().st_mtime_ns
    assert isinstance(mtime, int)


def test_built_once_then_read_back_exactly(cache):
    built = []
    first = cached_splits("k", _builder(built), Split)
    assert (cache / "k.pt").is_file() and (cache / "k.sha256").read_text().endswith("\n")
    again = cached_splits("k", _builder(built), Split)
    assert built == [1]  # the second call read the cache
    for name in ("train", "test"):
        assert torch.equal(again[name].images, first[name].images)
        assert torch.equal(again[name].labels, first[name].labels)
        assert again[name].classes == ["a", "b"] and isinstance(again[name].classes, list)
    assert cached_splits("other", _builder(built), Split) and built == [1, 1]


@pytest.mark.parametrize("damage, problem", [
    ("flip", "its SHA-256 differs from the one written with it"),
    ("truncate", "its SHA-256 differs"),
    ("no checksum", "its checksum file is missing"),
    ("does not load", "it does not load"),
])
def test_a_damaged_cache_is_rebuilt_never_trusted(cache, caplog, damage, problem):
    built = []
    first = cached_splits("k", _builder(built), Split)
    path, stamp = cache / "k.pt", cache / "k.sha256"
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # one flipped byte that torch.load might read happily
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "no checksum":
        stamp.unlink()
    else:  # a file that matches its checksum but is not a tensor file
        path.write_bytes(b"not a tensor file")
        stamp.write_text(cache_module.sha256_file(path) + "\n")
    with caplog.at_level(logging.WARNING):
        again = cached_splits("k", _builder(built), Split)
    assert built == [1, 1] and problem in caplog.text
    full = {"flip": "its SHA-256 differs from the one written with it (truncated or corrupted)",
            "truncate": "its SHA-256 differs from the one written with it (truncated or "
                        "corrupted)",
            "no checksum": "its checksum file is missing",
            "does not load": "it does not load (UnpicklingError)"}[damage]
    assert f"decoded-data cache {path} is not usable ({full}): rebuilding it" in caplog.messages
    assert torch.equal(again["train"].images, first["train"].images)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cached_splits("k", _builder(built), Split)
    assert caplog.text == "" and built == [1, 1]  # the rebuilt cache is trusted again


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(cache, caplog, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.torch, "save", full)
    built = []
    with caplog.at_level(logging.WARNING):
        splits = cached_splits("k", _builder(built), Split)
    assert len(splits["train"].labels) == 2  # the data are there all the same
    assert "the disk is full" in caplog.text and "not cached" in caplog.text
    assert not cache.exists() or not list(cache.glob("*"))


def test_a_checksum_that_cannot_be_written_leaves_no_cache_file(cache, caplog, monkeypatch):
    real = cache_module.atomic_write

    def write(path, fn):
        if Path(path).suffix == ".sha256":
            raise cache_module.StorageError("cannot write it: the disk is full")
        return real(path, fn)

    monkeypatch.setattr(cache_module, "atomic_write", write)
    built = []
    with caplog.at_level(logging.WARNING):
        cached_splits("k", _builder(built), Split)
    assert "not cached" in caplog.text and not (cache / "k.pt").exists()


def test_folder_data_are_cached_and_rebuilt_from_the_images(tmp_path, cache, caplog):
    """The whole path through load_splits: a corrupted cache of a real folder is rebuilt
    from the images."""
    from helpers import make_folder_dataset
    from vggnet.data import load_splits

    folder = make_folder_dataset(tmp_path / "images", per_class=4, sizes=((16, 16),))
    first, _ = load_splits(str(folder), val_fraction=0.25)
    (path,) = cache.glob("*.pt")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again, _ = load_splits(str(folder), val_fraction=0.25)
    assert "SHA-256 differs" in caplog.text
    assert torch.equal(again.images, first.images)


def test_a_cache_file_with_code_in_it_never_runs_it(cache, tmp_path, caplog):
    """Even with a checksum that matches (written by someone with access to the cache), a
    cache file holding a pickled object is refused, never unpickled into running code."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    built = []
    cached_splits("k", _builder(built), Split)
    path = cache / "k.pt"
    with open(path, "wb") as f:
        pickle.dump({"train": Evil()}, f, protocol=2)
    (cache / "k.sha256").write_text(cache_module.sha256_file(path) + "\n")
    with caplog.at_level(logging.WARNING):
        cached_splits("k", _builder(built), Split)
    assert not marker.exists() and built == [1, 1] and "it does not load" in caplog.text
