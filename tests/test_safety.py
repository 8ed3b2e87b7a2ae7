"""Crash safety and safe loading: real kills of real training processes, hostile files."""

import io
import os
import signal
import time

import pytest
import torch

from vggnet.run import load_checkpoint
from vggnet.training.config import resolve
from vggnet.training.loop import train
from vggnet.models import WeightsError, create_model

from helpers import CliProcess

# fp32 pinned: the resumed run is compared bit for bit with an in-process reference, and the
# same numerics on every CPU keep this test meaning the same everywhere
# 320 training images: 10 steps of 32 an epoch
TRAIN = ["--data", "digits", "--width", "0.125", "--flip", "false", "--batch-size", "32",
         "--deterministic", "true", "--progress", "false", "--seed", "3", "--precision", "fp32",
         "--train-subset", "320", "--test-subset", "100"]
SAME = dict(data="digits", width=0.125, flip=False, batch_size=32, deterministic=True,
            progress=False, seed=3, precision="fp32", train_subset=320, test_subset=100)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pth_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(WeightsError, match="refused"):
        create_model("vgg11", width=0.125, weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04garbage"])
def test_broken_weight_files_are_one_line_errors(tmp_path, content):
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"w{suffix}"
        path.write_bytes(content)
        with pytest.raises(WeightsError) as err:
            create_model("vgg11", width=0.125, weights=path)
        assert "\n" not in str(err.value) and path.name in str(err.value)


def _spawn(out, *extra, fault: str | None = None):
    """`vggnet train` in a process of its own (helpers.CliProcess); ``fault`` makes it fail
    at a named point (vggnet.faults: ``kill:write.before_rename/last.safetensors@2`` and the
    like)."""
    env = dict(os.environ)
    env.pop("VGGNET_FAULT", None)
    if fault:
        env["VGGNET_FAULT"] = fault
    log = out.parent / f"train-{len(list(out.parent.glob('train-*.log')))}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    return CliProcess(["train", *TRAIN, "--out", out, *extra], env, log)


def _wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.output}")
        time.sleep(0.02)
    raise AssertionError("timed out")


_REFERENCES: dict = {}  # epochs -> the uninterrupted run's weights, trained once per session


def _reference(tmp_path, epochs):
    if epochs not in _REFERENCES:
        cfg = resolve(None, dict(SAME, epochs=epochs, out=str(tmp_path / "ref")))
        train(cfg)
        _REFERENCES[epochs] = load_checkpoint(tmp_path / "ref", which="last")[0].state_dict()
    return _REFERENCES[epochs]


def test_sigkill_during_training_loses_nothing_and_resume_is_exact(tmp_path):
    out = tmp_path / "run"
    proc = _spawn(out, "--epochs", "4")
    # kill while epoch 2's files are being written or soon after: any moment must be safe
    _wait_for(lambda: (out / "metrics.jsonl").is_file()
              and len((out / "metrics.jsonl").read_text().splitlines()) >= 2, proc)
    proc.kill()  # a real SIGKILL: no handler, no cleanup
    assert proc.wait(60) == -signal.SIGKILL
    model, meta = load_checkpoint(out, which="last")  # the previous checkpoint loads
    assert meta.epoch >= 2
    resumed = _spawn(out, "--epochs", "4", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.output
    assert not list(out.glob(".*.tmp"))  # temporary files of the killed run are cleaned up
    got = load_checkpoint(out, which="last")[0].state_dict()
    expected = _reference(tmp_path, 4)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


# each moment of a checkpoint cycle where a crash could leave a run half-written; the state
# (last.state.pt) is written first, then the weights (last.safetensors), then their metadata
CHECKPOINT_KILLS = ["write.before_rename/last.state.pt", "write.after_rename/last.state.pt",
                    "write.before_rename/last.safetensors", "write.after_rename/last.safetensors",
                    "write.after_rename/last.json"]


def test_sigkill_at_every_point_of_a_checkpoint_write_loses_nothing(tmp_path):
    """One run killed (SIGKILL, no cleanup) at each named point of a checkpoint write in turn,
    resumed after each: every kill lands where it says (the process dies by SIGKILL), the
    last checkpoint always loads, and the run, finished, has exactly the weights of a run
    never interrupted."""
    out = tmp_path / "run"
    epochs = str(len(CHECKPOINT_KILLS) + 1)
    for i, point in enumerate(CHECKPOINT_KILLS):
        # the first process dies in its second checkpoint (the first one has none before it)
        proc = _spawn(out, "--epochs", epochs, *(["--resume"] if i else []),
                      fault=f"kill:{point}@{1 if i else 2}")
        proc.wait(300)
        assert proc.returncode == -signal.SIGKILL, f"{point} was not reached:\n{proc.output}"
        model, meta = load_checkpoint(out, which="last")
        state = torch.load(out / "last.state.pt", weights_only=True)
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        assert state["epoch"] >= meta.epoch >= 1, point  # state first, then the weights
    resumed = _spawn(out, "--epochs", epochs, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.output
    assert not list(out.glob(".*.tmp"))  # the killed writes' temporary files are cleaned up
    got = load_checkpoint(out, which="last")[0].state_dict()
    for key, value in _reference(tmp_path, int(epochs)).items():
        assert torch.equal(value, got[key]), key


def test_sigint_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    """Ctrl-C at step 3 of epoch 2 (10 steps an epoch): the step
    finishes, the state is saved mid-epoch, and the resumed run ends exactly as an
    uninterrupted one."""
    out = tmp_path / "run"
    proc = _spawn(out, "--epochs", "3", fault="interrupt:train.step@13")
    proc.wait(300)
    log = proc.output
    assert proc.returncode == 0, log
    assert "interrupted" in log and "Traceback" not in log
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 3), log
    resumed = _spawn(out, "--epochs", "3", "--resume")
    assert resumed.wait(timeout=300) == 0
    got = load_checkpoint(out, which="last")[0].state_dict()
    expected = _reference(tmp_path, 3)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_ctrl_c_in_the_middle_of_an_epoch_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C after step 5 of epoch 2 (in-process, deterministic): the resumed run replays the
    rest of that epoch and ends with the same weights as an uninterrupted run."""
    from vggnet.data.loader import TensorLoader

    original = TensorLoader.batches

    def batches(self, skip=0):
        for i, batch in enumerate(original(self, skip), start=skip):
            if self.train and self.epoch == 1 and i == 5 and not getattr(self, "_hit", False):
                self._hit = True
                os.kill(os.getpid(), signal.SIGINT)  # handled: the step still completes
            yield batch

    monkeypatch.setattr(TensorLoader, "batches", batches)
    cfg = dict(SAME, epochs=3, out=str(tmp_path / "run"))
    first = train(resolve(None, cfg))
    assert first.interrupted and len(first.history) == 1
    state = torch.load(tmp_path / "run" / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 6)
    monkeypatch.setattr(TensorLoader, "batches", original)
    resumed = train(resolve(None, {**cfg, "resume": True}))
    got = load_checkpoint(tmp_path / "run", which="last")[0].state_dict()
    expected = _reference(tmp_path, 3)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
    assert len(resumed.history) == 3


def test_a_new_run_never_overwrites_an_old_one(tmp_path):
    from vggnet.training.config import resolve
    from vggnet.training.loop import train

    args = dict(data="digits", width=0.125, epochs=1, flip=False, progress=False,
                train_subset=64, test_subset=50, out=str(tmp_path / "run"))
    train(resolve(None, args))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="already holds a run .* --resume, .* --overwrite true"):
        train(resolve(None, {**args, "seed": 1}))
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before
    train(resolve(None, {**args, "seed": 1, "overwrite": True}))
    assert (tmp_path / "run" / "last.safetensors").read_bytes() != before["last.safetensors"]
    with pytest.raises(ValueError, match="--resume: .* not found"):
        train(resolve(None, {**args, "out": str(tmp_path / "nothing"), "resume": True}))


# --- published weights: downloaded with their checksum verified ------------------------------

class _FakeResponse(io.BytesIO):
    """What urlopen returns, serving local bytes (no network here)."""

    def info(self):
        from email.message import Message

        headers = Message()
        headers["Content-Length"] = str(len(self.getvalue()))
        return headers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, payload: bytes):
    import torch.hub

    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append(request.full_url)
        return _FakeResponse(payload)

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return calls


def _payload(tmp_path):
    """A small weights file standing in for torchvision's (what is verified is its hash;
    that create_model loads such a file from the cache is test_photos' offline test)."""
    sd = {"features.0.weight": torch.randn(4, 3, 3, 3), "classifier.6.bias": torch.randn(7)}
    torch.save(sd, tmp_path / "w.pth")
    return (tmp_path / "w.pth").read_bytes(), sd


def test_published_weights_are_downloaded_once_and_verified(tmp_path, monkeypatch):
    import hashlib

    import vggnet.models.hub as hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    payload, sd = _payload(tmp_path)
    digest = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setitem(hub.URLS, "vgg11", f"https://example.org/vgg11-{digest}.pth")
    calls = _serve(monkeypatch, payload)
    path = hub.pretrained_file("vgg11", progress=False)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / f"vgg11-{digest}.pth"
    assert path == cached and cached.read_bytes() == payload and len(calls) == 1
    assert calls == [f"https://example.org/vgg11-{digest}.pth"]
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert hub.pretrained_file("vgg11", progress=False) == cached
    assert len(calls) == 1  # the cached copy, verified again, no second download
    # a cached copy altered afterwards is refused, never loaded
    cached.write_bytes(payload[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="corrupt or altered .* delete it"):
        hub.pretrained_file("vgg11", progress=False)
    with pytest.raises(WeightsError, match="corrupt or altered"):  # through the model too
        create_model("vgg11", num_classes=7, width=0.125, weights="imagenet")


def test_a_corrupt_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    import vggnet.models.hub as hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    payload, _ = _payload(tmp_path)
    _serve(monkeypatch, payload)  # not the file whose hash torchvision publishes
    with pytest.raises(WeightsError, match="download of .*vgg16-397923af.pth is corrupt"):
        hub.pretrained_file("vgg16", progress=False)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_no_published_weights_and_offline_are_one_line(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match="no published ImageNet weights for vgg16_c"):
        create_model("vgg16_c", width=0.125, weights="imagenet")

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(WeightsError, match="cannot download .* offline, copy vgg13-19584684.pth"):
        create_model("vgg13", width=0.125, weights="imagenet")
