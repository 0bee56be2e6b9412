"""Data parallelism for the engine loop: what changes when one update is computed by several workers.

:func:`metarl.engine.loop.train` takes a ``parallel`` object; the default, :class:`SingleProcess`, changes
nothing. :class:`TorchDistributed` runs inside one worker of a ``torch.distributed`` group (set up by Ray
Train, :mod:`metarl.engine.ray_train`):

- every worker draws the same global batch (the data stream is a function of seed and step) and keeps its
  own rows, ``rows [rank·B/W, (rank+1)·B/W)`` of every tensor whose first axis is the global batch
  (:func:`shard_batch`; a task may define ``shard(batch, rank, world)`` instead), so W workers see exactly the
  batch one process would;
- parameters and buffers start as rank 0's (broadcast);
- after the backward pass the gradients are averaged over the workers (one flat all-reduce, what DDP does
  with its buckets), before clipping and the optimiser step, so the update equals the one-process update
  on the global batch when the loss is a mean over equally sized shards. Here rather than
  ``DistributedDataParallel``: a task's ``loss`` may call any part of the model, not only its ``forward``,
  and σ-MoE experts that a shard did not use have no gradient (zeros are averaged for them);
- logging, evaluation, checkpoints and the final tests run on rank 0 only.
"""
from __future__ import annotations

from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn


def shard_batch(batch: Any, rank: int, world: int, batch_size: int) -> Any:
    """Rows ``[rank·n, (rank+1)·n)``, n = batch_size / world, of every tensor in ``batch`` (a tensor, dict,
    list, tuple or dataclass of them) whose first axis has length ``batch_size``; other values unchanged."""
    n = batch_size // world
    if isinstance(batch, torch.Tensor):
        return batch[rank * n:(rank + 1) * n] if batch.dim() and batch.shape[0] == batch_size else batch
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world, batch_size) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(v, rank, world, batch_size) for v in batch)
    if is_dataclass(batch):
        return replace(batch, **{k: shard_batch(v, rank, world, batch_size) for k, v in vars(batch).items()})
    return batch


class SingleProcess:
    """One process: every hook is the identity."""

    rank, world = 0, 1
    is_main = True

    def prepare(self, model: nn.Module) -> None:
        """Called once the model is built (and restored)."""

    def shard(self, task, batch: Any, batch_size: int) -> Any:
        return batch

    def average_gradients(self, model: nn.Module) -> None:
        """Called after the backward pass, before clipping."""

    def mean(self, value: float) -> float:
        """The mean of a scalar over the workers (for logging)."""
        return value

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every worker (decisions that must be taken together, e.g. when to checkpoint)."""
        return flag

    def checkpoint_saved(self, path: Path, step: int) -> None:
        """Called on every worker at the same updates, after rank 0 saved ``checkpoint.pt`` (path on rank 0)."""


class TorchDistributed(SingleProcess):
    """Inside a ``torch.distributed`` process group (gloo on CPUs, NCCL on GPUs). ``on_checkpoint(path, step)``
    is called on every worker after a periodic checkpoint (``path`` is None on the other ranks): Ray Train
    reports it there, so a restarted worker group resumes from it."""

    def __init__(self, on_checkpoint: Optional[Callable[[Optional[Path], int], None]] = None):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("TorchDistributed needs an initialised torch.distributed process group")
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.on_checkpoint = on_checkpoint
        self.device = torch.device("cpu")

    def prepare(self, model: nn.Module) -> None:
        self.device = next(model.parameters()).device
        for tensor in list(model.parameters()) + list(model.buffers()):
            self.dist.broadcast(tensor.data, src=0)

    def shard(self, task, batch: Any, batch_size: int) -> Any:
        own = getattr(task, "shard", None)
        if own is not None:
            return own(batch, self.rank, self.world)
        return shard_batch(batch, self.rank, self.world, batch_size)

    def average_gradients(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t) / self.world

    def agree(self, flag: bool) -> bool:
        t = torch.tensor([int(flag)], device=self.device)
        self.dist.broadcast(t, src=0)
        return bool(t)

    def checkpoint_saved(self, path: Path, step: int) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(path if self.is_main else None, step)


class NullLogger:
    """The logger of the ranks other than 0."""

    def log(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass
