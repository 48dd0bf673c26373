"""torch.distributed setup from the torchrun environment: DDP (default) or FSDP, ZeRO-1 optimizer, collectives."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# FSDP and ZeRO are imported where used: they add a second or more of import time that single-process runs skip.

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank / world size from torchrun, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def setup(device: str = "auto") -> DistEnv:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR).

    Without torchrun this is a single process with no process group. NCCL on GPUs, gloo on CPUs.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = _pick_device(device, local_rank)
    if "RANK" not in os.environ:
        return DistEnv(device=target)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=target if target.type == "cuda" else None)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, target, backend)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv, strategy: str, shard_types: tuple[type, ...] = ()) -> nn.Module:
    """DDP over the trainable parameters, or FSDP (fully_shard) of every `shard_types` submodule and
    the root: frozen spatial weights are sharded too. A single process gets the model back."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; expected one of {STRATEGIES}")
    if not env.distributed:
        return model
    if strategy == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard  # FSDP runs only: a second of import time

    for module in model.modules():
        if shard_types and isinstance(module, shard_types):
            fully_shard(module)
    return fully_shard(model)


def make_optimizer(params: Iterable[nn.Parameter], env: DistEnv, *, zero: bool, strategy: str, lr: float,
                   betas: tuple[float, float], eps: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; under DDP with `zero`, a ZeroRedundancyOptimizer partitions its state across ranks (ZeRO-1)."""
    params = list(params)
    if not params:
        raise ValueError("nothing to train: the model has no trainable parameters")
    kwargs = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if env.distributed and zero and strategy == "ddp":
        from torch.distributed.optim import ZeroRedundancyOptimizer  # ZeRO runs only: a second of import time

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def is_zero(optimizer: torch.optim.Optimizer) -> bool:
    from torch.distributed.optim import ZeroRedundancyOptimizer  # a second of import time, as in make_optimizer

    return isinstance(optimizer, ZeroRedundancyOptimizer)


# -- collectives (no-ops on one process) ------------------------------------------------------------
def mean_over_ranks(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return float(tensor) / env.world_size


def max_over_ranks(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(value, env: DistEnv):
    """Rank 0's `value` on every rank (e.g. an error found while checking inputs)."""
    if not env.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
