"""Data-parallel training: 2 gloo processes on the CPU, launched by torchrun."""

import os
import subprocess
import sys

import pytest
import torch

from vggnet.errors import ConfigError
from vggnet.run import load_checkpoint
from vggnet.training.config import resolve
from vggnet.training.loop import train

# One optimizer step: 64 images, global batch 64, no augmentation or dropout, so the only
# difference between 1 and 2 processes is the order in which gradients are summed.
ARGS = dict(data="digits", model="vgg11", width=0.125, head="linear", train_subset=64,
            batch_size=64, epochs=1, crop_padding=0, flip=False, progress=False, seed=5,
            channels_last=False, precision="fp32")  # compared across processes: one numerics


def _torchrun(out, extra=(), *, restarts: int = 0, fault: str | None = None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", str(restarts), "--monitor-interval", "0.2", "-m", "vggnet", "train"]
    for key, value in {**ARGS, "out": str(out), **dict(extra)}.items():
        cmd += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("VGGNET_FAULT", None)
    if fault:
        env["VGGNET_FAULT"] = fault
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_one_step_equals_one_process_with_the_global_batch(tmp_path):
    done = _torchrun(tmp_path / "ddp")
    assert done.returncode == 0, done.stdout + done.stderr
    train(resolve(None, {**ARGS, "out": str(tmp_path / "single")}))
    ddp, meta = load_checkpoint(tmp_path / "ddp", which="last")
    single, _ = load_checkpoint(tmp_path / "single", which="last")
    start = resolve(None, ARGS)
    for key, value in single.state_dict().items():
        assert torch.allclose(ddp.state_dict()[key], value, atol=1e-6, rtol=1e-5), key
    # the step did move the weights (the comparison above is not between two initialisations)
    from vggnet.training.setup import build_model

    torch.manual_seed(start.seed)
    init = build_model(start, 10).state_dict()
    changed = sum(not torch.equal(init[k], v) for k, v in single.state_dict().items())
    assert changed > 0
    # rank 0 alone wrote one complete run
    assert meta.epoch == 1 and sorted(p.name for p in (tmp_path / "ddp").glob("*.safetensors")) == \
        ["best.safetensors", "last.safetensors"]
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1


def test_global_batch_must_divide(tmp_path, monkeypatch):
    """Each process of a torchrun job refuses a global batch its processes cannot share,
    before it joins the group (no rendezvous to wait for, no file written)."""
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; no group is joined
    with pytest.raises(ConfigError, match="batch_size 63 .* divisible by the 2 processes"):
        train(resolve(None, {**ARGS, "batch_size": 63, "out": str(tmp_path / "odd")}))
    assert not (tmp_path / "odd").exists()


def test_a_killed_rank_restarts_the_job_from_its_last_checkpoint(tmp_path):
    """Elastic training: under `torchrun --max-restarts 1`, rank 1 is SIGKILLed at step 2 of
    epoch 2 (a fault point: 4 steps an epoch of 64 images, 32 a process); torchrun starts
    both processes again, the run resumes from the checkpoint of epoch 1 by itself, and it
    ends with exactly the weights of the same job never interrupted. (The restarted
    processes once failed to connect, reading the dead ones' addresses from the store of
    the attempt before: distributed.init_distributed keys each attempt apart.)"""
    extra = {"train_subset": 256, "epochs": 2, "deterministic": True}
    done = _torchrun(tmp_path / "elastic", extra, restarts=1,
                     fault="kill:train.step@6,rank=1,attempt=0")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "restart 1 of this torchrun job: resuming" in log and "resuming" in log
    plain = _torchrun(tmp_path / "plain", extra)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    restarted, meta = load_checkpoint(tmp_path / "elastic", which="last")
    uninterrupted, _ = load_checkpoint(tmp_path / "plain", which="last")
    assert meta.epoch == 2
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(restarted.state_dict()[key], value), key
    assert len((tmp_path / "elastic" / "metrics.jsonl").read_text().splitlines()) == 2
