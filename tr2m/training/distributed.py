"""Process-group setup for torchrun + DistributedDataParallel (no home-made launcher).

`torchrun --nproc_per_node=N -m tr2m.training.cli ...` (or the `tr2m-train` script) sets RANK,
WORLD_SIZE and LOCAL_RANK; `setup` reads them, picks NCCL on CUDA and gloo on CPU, and returns a
`DistContext`. A plain `python`/`tr2m-train` run gets a single-process context and never touches
torch.distributed, so nothing here is needed outside multi-GPU training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from tr2m.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among world_size processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun created (if any) and return this process's context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=resolved)


def teardown(ctx: DistContext, barrier: bool = True) -> None:
    """Leave the process group, after a barrier (so no rank exits while another still sends)
    unless this rank failed: then the others would wait for it forever."""
    if ctx.distributed and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of `values` over all ranks (a copy; the input is untouched)."""
    out = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= ctx.world_size
    return out


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is True on at least one (so all ranks stop at the same step)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of integer keys, e.g. (seed, step, rank).

    Training draws every random number from seeds derived this way, so a run resumed at step k
    repeats exactly what the uninterrupted run did from step k (no RNG state to save).
    """
    words = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def barrier(ctx: Optional[DistContext]) -> None:
    if ctx is not None and ctx.distributed:
        dist.barrier()
