"""Faults survived by a training run: a full disk while writing its checkpoints (the write
itself: test_io.py; the decoded-data cache: test_cache.py)."""

import errno


from vggnet.cli import main
from vggnet.run import load_checkpoint

TRAIN = ["train", "--data", "digits", "--width", "0.125", "--flip", "false", "--progress",
         "false", "--precision", "fp32", "--seed", "3"]


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
