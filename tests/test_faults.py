"""Faults survived: a full or read-only disk while writing checkpoints, metrics or the decoded
data cache, and a cache file that was truncated or corrupted behind vggnet's back."""

import errno
import logging

import pytest
import torch

from vggnet.cli import main
from vggnet.errors import StorageError
from vggnet.io import atomic_write
from vggnet.run import load_checkpoint

TRAIN = ["train", "--data", "digits", "--width", "0.125", "--flip", "false", "--progress",
         "false", "--precision", "fp32", "--seed", "3"]


def _fail_with(code):
    def write(tmp):
        tmp.write_bytes(b"half a file")
        raise OSError(code, "simulated")
    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_is_one_line_and_keeps_the_old_file(tmp_path, code):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(StorageError) as info:
        atomic_write(target, _fail_with(code))
    message = str(info.value)
    assert "\n" not in message and str(target) in message and "previous version" in message
    assert info.value.errno == code and isinstance(info.value, OSError)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary left


def test_other_os_errors_are_not_disguised(tmp_path):
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "x", _fail_with(errno.EIO))
    assert not isinstance(info.value, StorageError)


def test_disk_full_during_training_stops_with_one_line_and_resume_continues(tmp_path, capsys,
                                                                             monkeypatch):
    import vggnet.run as run_module

    out = tmp_path / "run"
    real = run_module.save_weights
    calls = []

    def save_weights(module, path, **kw):  # the disk fills up at epoch 2's checkpoint
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote last and best
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(module, path, **kw)

    monkeypatch.setattr(run_module, "save_weights", save_weights)
    assert main([*TRAIN, "--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0]
    model, meta = load_checkpoint(out, which="last")  # the previous checkpoint loads
    assert meta.epoch == 1 and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(run_module, "save_weights", real)  # space freed
    assert main([*TRAIN, "--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out, which="last")[1].epoch == 3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


def _folder(tmp_path):
    from helpers import make_folder_dataset

    return make_folder_dataset(tmp_path / "images", per_class=4, sizes=((16, 16),))


def test_a_corrupted_or_truncated_cache_is_detected_and_rebuilt(tmp_path, cache, caplog):
    from vggnet.data import load_splits

    folder = _folder(tmp_path)
    first, _ = load_splits(str(folder), val_fraction=0.25)
    (path,) = cache.glob("*.pt")
    assert path.with_suffix(".sha256").is_file()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte that torch.load would happily read
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again, _ = load_splits(str(folder), val_fraction=0.25)
    assert "SHA-256 differs" in caplog.text and "rebuilding" in caplog.text
    assert torch.equal(again.images, first.images)  # rebuilt from the images, not trusted
    path.write_bytes(path.read_bytes()[:100])  # truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third, _ = load_splits(str(folder), val_fraction=0.25)
    assert "rebuilding" in caplog.text and torch.equal(third.images, first.images)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_splits(str(folder), val_fraction=0.25)
    assert caplog.text == ""  # the rebuilt cache is trusted again


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, cache, caplog,
                                                                 monkeypatch):
    import vggnet.data.cache as cache_module
    from vggnet.data import load_splits

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.torch, "save", full)
    folder = _folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        train, val = load_splits(str(folder), val_fraction=0.25)
    assert len(train) + len(val) == 8  # the data are there all the same
    assert "the disk is full" in caplog.text and "not cached" in caplog.text
    assert not cache.exists() or not list(cache.glob("*"))
