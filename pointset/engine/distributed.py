"""Multi-process training under ``torchrun``: process group, device, sharding, reductions.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, which
:func:`process_info` reads. With ``WORLD_SIZE > 1``, :func:`process_group` joins the process
group (NCCL on CUDA, gloo on CPU) for the duration of a ``with`` block and destroys it
afterwards, also when the block raises. A single process needs none of this and every
helper degrades to a no-op.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available")
    return device


def process_info(device: str = "auto") -> DistInfo:
    """This process's place in the ``torchrun`` environment (rank 0 of 1 without one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(rank, world, local_rank, resolve_device(device, local_rank))


@contextlib.contextmanager
def process_group(info: DistInfo) -> Iterator[None]:
    """Be in the process group of ``info`` for the ``with`` block.

    With ``info.world_size > 1`` and no group yet, joins one (NCCL on CUDA, gloo on CPU;
    rendezvous through ``MASTER_ADDR`` / ``MASTER_PORT`` as ``torchrun`` sets them) and
    destroys it with :func:`teardown` when the block ends, also on error. A group that
    already exists (made by the caller, or by an enclosing block) is used and left as it is.
    """
    if not info.distributed or dist.is_initialized():
        yield
        return
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)
    dist.init_process_group(
        backend="nccl" if info.device.type == "cuda" else "gloo",
        store=_fresh_store(info),
        rank=info.rank,
        world_size=info.world_size,
    )
    try:
        yield
    finally:
        teardown()


#: How many groups this process has joined; names each join's keys in the shared store.
_joins = itertools.count()


def _fresh_store(info: DistInfo) -> dist.Store:
    """The rendezvous store of ``MASTER_ADDR`` / ``MASTER_PORT``, under a key prefix of its
    own for this join.

    ``torchrun``'s store outlives a group, and torch names every default group alike, so a
    second join in the same processes would find the first join's addresses already in the
    store and connect to sockets that are closed (gloo: ``connectFullMesh ... Connection
    refused``). Every process joins the same sequence of groups, so the join count names
    the same prefix on every rank.
    """
    store, _, _ = next(dist.rendezvous("env://", rank=info.rank, world_size=info.world_size))
    return dist.PrefixStore(f"pointset/join{next(_joins)}", store)


def teardown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all processes in place and return it (no-op for one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy the buffers (e.g. BatchNorm running statistics) of process ``src`` to all.

    ``DistributedDataParallel`` broadcasts them before each training forward, but each
    process then updates its own copy; this makes them equal again before evaluation.
    """
    if dist.is_initialized():
        for buf in module.buffers():
            dist.broadcast(buf, src)


def shard_batch(indices: Tensor, rank: int, world_size: int) -> Tensor:
    """This process's slice of one global batch of sample ``indices [B]``.

    ``B`` must be a multiple of ``world_size``; the slices are contiguous and disjoint and
    their concatenation over ranks is the global batch.
    """
    if indices.numel() % world_size:
        raise ValueError(
            f"a batch of {indices.numel()} samples cannot be split over {world_size} processes"
        )
    per = indices.numel() // world_size
    return indices[rank * per : (rank + 1) * per]
