"""Sharding under torchrun: rank / world size from the environment, sums and gathers across ranks."""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among `world_size` processes (1 process: rank 0 of 1, no communication)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """Every world_size-th item starting at rank: the shards are disjoint and cover `items`."""
        return list(items[self.rank::self.world_size])

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Elementwise float64 sum over all ranks."""
        if not self.distributed:
            return np.asarray(array, dtype=np.float64)
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float64)).clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.numpy()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def device(self, requested: str | None = None) -> torch.device:
        """`requested`, else this rank's GPU when CUDA is available, else the CPU."""
        if requested:
            return torch.device(requested)
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_shard() -> Shard:
    """Join the torchrun process group when launched by it (gloo: CPU tensors for every sum)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        atexit.register(_leave_process_group)
    return Shard(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _leave_process_group() -> None:
    """Destroy the process group before the interpreter exits: left alive, gloo's threads can end a
    rank with `terminate called without an active exception` (SIGABRT) after its work is done."""
    if dist.is_initialized():
        dist.destroy_process_group()
