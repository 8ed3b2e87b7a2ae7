"""Data-parallel training with torchrun: NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node N -m vggnet train ...`` runs the same command in N processes;
each takes its slice of every global batch (``batch_size`` is the global batch), gradients
are averaged by DDP, and only rank 0 logs and writes files. With ``--max-restarts K``,
torchrun starts every process again when one dies; the restarted run resumes from its last
checkpoint by itself (:func:`elastic_restart`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def world_size() -> int:
    """How many processes torchrun started for this job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group that torchrun set up (a no-op when run as one process)."""
    world = world_size()
    if world <= 1:
        return DistContext(), device
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=world,
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        restart = elastic_restart()
        if restart:
            # torchrun may hand a restarted job the store of the attempt before it, which
            # still holds the dead processes' addresses: a new process could read one and
            # fail to connect (seen in 3 of 6 restarts on a loaded 2-core machine). Keys
            # under this attempt's own prefix are only ever this attempt's.
            store, rank, size = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"vggnet/attempt-{restart}", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=size)
        else:
            dist.init_process_group(backend)
    return ctx, device


def elastic_restart() -> int:
    """How many times torchrun has restarted this job's processes (0: the first attempt, or
    not under torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def restarted_by_torchrun(out) -> bool:
    """Whether torchrun (``--max-restarts``) started this process again after a worker died
    and ``out`` holds the run's state to go on from, as ``--resume`` would (said in the log)."""
    import logging
    from pathlib import Path

    restart = elastic_restart()
    if not (restart and (Path(out) / "last.state.pt").is_file()):
        return False
    logging.getLogger("vggnet").info(f"restart {restart} of this torchrun job: resuming {out}")
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
