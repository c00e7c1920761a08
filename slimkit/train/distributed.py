"""Data-parallel training under `torchrun`: process group, DDP wrapper, sharded loader. No code change needed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from slimkit.errors import ConfigError

__all__ = ["DistInfo", "setup_distributed", "wrap_model", "shard_loader", "per_rank_batch", "average_buffers",
           "is_main_process"]


@dataclass(frozen=True)
class DistInfo:
    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return DistInfo(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo(1, 0, 0)


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard_loader(loader: DataLoader, info: DistInfo, seed: int) -> DataLoader:
    """The same loader over this rank's shard (a seeded DistributedSampler; `set_epoch` reshuffles).

    The loader's batch size is the *global* batch: each of the N processes takes batch / N images, so a step sees
    as many images as in one process, there are as many steps per epoch, and the same learning rate applies (DDP
    averages the gradients). Training under torchrun is the same recipe as without, only faster."""
    if not info.enabled:
        return loader
    per_rank = per_rank_batch(loader.batch_size or 1, info)
    sampler = DistributedSampler(loader.dataset, info.world_size, info.rank, shuffle=True, seed=seed)
    return DataLoader(loader.dataset, batch_size=per_rank, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, drop_last=loader.drop_last)


def per_rank_batch(global_batch: int, info: DistInfo) -> int:
    """Images per process for a global batch (refused when there are more processes than images in a batch)."""
    if global_batch < info.world_size:
        raise ConfigError(f"the batch of {global_batch} images cannot be split over {info.world_size} processes: "
                          f"raise --batch-size to at least {info.world_size} (it is the global batch)")
    return global_batch // info.world_size


@torch.no_grad()
def average_buffers(model: nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running statistics) across ranks so all replicas agree."""
    if not info.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(info.world_size)


def is_main_process() -> bool:
    """True in the process that writes files and prints: rank 0 under torchrun, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0
