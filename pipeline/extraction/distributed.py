"""torchrun support: who am I, wait for the others, gather small results.

Under `torchrun --nproc_per_node=K` (one node or several through its rendezvous) each process finds
RANK, WORLD_SIZE and LOCAL_RANK in its environment. Ranks never write the same file: each takes the
shards i with i % WORLD_SIZE == RANK, and rank 0 alone writes the manifest and the report.
Without torchrun this is a world of one and every call below is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0


def init(device_name: str = "auto") -> World:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on GPUs); a world of one otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (torch.cuda.is_available() and device_name == "auto") or device_name.startswith("cuda")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)  # NCCL needs each rank on its own card before the first collective
        # A rank that is computing shards while others wait must not trip the timeout: one shard of
        # a large split can take many minutes on a slow device.
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(hours=6))
    return World(rank, size, local)


def device_for(world: World, device_name: str) -> str:
    """Each rank on its own GPU."""
    if device_name in ("auto", "cuda") and torch.cuda.is_available() and world.size > 1:
        return f"cuda:{world.local_rank}"
    return device_name


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(obj) -> list:
    """Every rank's `obj` (small, picklable), in rank order, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
