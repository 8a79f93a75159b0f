"""What the trainer needs from ``torch.distributed``: where this process stands, sums over ranks,
and the module's loss as a forward() for DistributedDataParallel."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .module import Batch, Losses


def distributed_context() -> tuple[int, int] | None:
    """This process's place in the default ``torch.distributed`` process group.

    Returns
    -------
    (rank, world_size) when a process group is initialised (e.g. by ``sivae fit`` under
    ``torchrun``), else None: a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over all ranks."""
    # on the trainer's device, which is where NCCL needs it; gloo takes CPU tensors
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


class PhaseLoss(nn.Module):
    """module.loss as a forward(), for DistributedDataParallel, which syncs only through one."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Batch, phase: str) -> Losses:
        return self.module.loss(batch, phase)
