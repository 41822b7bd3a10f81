"""Thin helpers over torch.distributed for runs started by ``torchrun`` or ``accelerate launch``.

Both launchers set ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
a plain ``python`` start is a world of one. Process management is the launcher's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from ..devices import resolve_device
from ..models.layers import ReferenceSyncBatchNorm2d


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_process_group: bool = False  # this process initialised the group and tears it down

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and samples."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def setup_distributed(device: str | None = None) -> DistributedContext:
    """Read the launcher's environment and join the process group when the world is larger than one.

    NCCL on CUDA, gloo otherwise (CPU runs work under ``torchrun --nproc_per_node 2``).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    # Training picks CUDA when present, else the CPU (MPS only when asked for by name).
    resolved = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"), local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, local_rank, world_size, resolved, owns)


def teardown_distributed(ctx: DistributedContext) -> None:
    """Wait for every rank, then leave the process group if this module joined it."""
    if ctx.is_distributed and dist.is_initialized():
        dist.barrier()
        if ctx.owns_process_group:
            dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Block until every rank arrives (a no-op in a world of one)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.barrier()


class LocalReferenceBatchNorm2d(nn.BatchNorm2d):
    """What ReferenceSyncBatchNorm2d computes on CPU (local batch statistics, ``num_batches_tracked``
    left alone), without the SyncBatchNorm type that DistributedDataParallel refuses on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or self.running_mean is None
        momentum = self.momentum if self.momentum is not None else 0.0
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, use_batch_stats, momentum, self.eps
        )


def localize_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ReferenceSyncBatchNorm2d in ``module`` for a LocalReferenceBatchNorm2d holding the
    same state (same numbers and state-dict keys), in place; for CPU process groups."""
    for name, child in module.named_children():
        if isinstance(child, ReferenceSyncBatchNorm2d):
            local = LocalReferenceBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            local.load_state_dict(child.state_dict())
            local.train(child.training)
            setattr(module, name, local.to(next(child.buffers()).device))
        else:
            localize_sync_batchnorm(child)
    return module


def wrap_ddp(module: nn.Module, ctx: DistributedContext) -> nn.Module:
    """DistributedDataParallel around ``module`` when distributed, else ``module`` itself.

    On CPU the reference's synchronized batch norms must already be localized (see
    :func:`localize_sync_batchnorm`): DDP accepts SyncBatchNorm only on GPUs.
    """
    if not ctx.is_distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=True)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (order from seed + epoch, one shard per rank) that can start mid-epoch.

    ``set_start(n)`` skips this rank's first ``n`` indices of the current epoch, so a resumed run
    sees exactly the samples an uninterrupted one would.
    """

    def __init__(self, dataset: Dataset, ctx: DistributedContext, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed)
        self.start_index = 0

    def set_start(self, index: int) -> None:
        self.start_index = int(index)

    def full_length(self) -> int:
        """Indices per epoch and rank, before skipping."""
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start_index:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_index)
