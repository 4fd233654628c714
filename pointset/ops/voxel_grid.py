"""Voxel grids: ``voxel_grid`` (cluster id of every point) and ``voxel_downsample``.

``voxel_grid`` follows PyG's ``voxel_grid`` / torch-cluster's ``grid_cluster``: a regular
grid of voxel ``size`` starts at ``start`` (default: the smallest coordinates of ``pos``);
the voxel of a point is ``floor((pos - start) / size)`` per dimension (computed in the dtype
of ``pos``) and its id is the row-major number of that voxel with the **first** coordinate
varying fastest, ``c_0 + n_0 * (c_1 + n_1 * (c_2 + ...))`` where
``n_d = trunc((end_d - start_d) / size_d) + 1``. The batch index is one more, slowest,
dimension, so ids of different clouds never collide and sorting ids groups points by cloud.
Ids are not consecutive; ``torch.unique(..., return_inverse=True)`` makes them so.

Difference from torch-cluster: points outside ``[start, end]`` raise ``ValueError``
(torch-cluster would silently give them ids of other voxels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Union

import torch
from torch import Tensor

from .._checks import check_batch, check_points

Number = Union[int, float]


def _per_dim(value, dim: int, name: str, like: Tensor) -> Tensor:
    """``value`` (number, sequence or tensor) as a ``[dim]`` tensor of ``like``'s dtype."""
    if isinstance(value, Tensor):
        t = value.detach().to(dtype=like.dtype, device=like.device).flatten()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor([float(value)], dtype=like.dtype, device=like.device)
    elif isinstance(value, Sequence) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        t = torch.tensor([float(v) for v in value], dtype=like.dtype, device=like.device)
    else:
        raise ValueError(
            f"{name} must be a number, a sequence of numbers or a tensor, got {value!r}"
        )
    if t.numel() == 1:
        t = t.expand(dim)
    elif t.numel() != dim:
        raise ValueError(
            f"{name} must have 1 or {dim} entries (one per coordinate), got {t.numel()}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def voxel_grid(
    pos: Tensor,
    size: Number | Sequence[Number] | Tensor,
    batch: Tensor | None = None,
    start: Number | Sequence[Number] | Tensor | None = None,
    end: Number | Sequence[Number] | Tensor | None = None,
) -> Tensor:
    """Voxel id of every point (PyG ``voxel_grid`` semantics, see the module docstring).

    Args:
        pos: ``[N, D]`` positions.
        size: voxel size, > 0: one number or one per coordinate.
        batch: ``[N]`` sorted cloud index of each point, or ``None``.
        start: grid origin (number or per coordinate); default: ``pos.min(0)``.
        end: grid end (number or per coordinate); default: ``pos.max(0)``. Every point must
            lie in ``[start, end]``.

    Returns:
        ``[N]`` long voxel ids; equal ids = same voxel of the same cloud.

    Example::

        >>> pos = torch.tensor([[0.0, 0.0], [11.0, 9.0], [2.0, 8.0], [2.0, 2.0], [8.0, 3.0]])
        >>> voxel_grid(pos, size=5.0)
        tensor([0, 5, 3, 0, 1])
    """
    check_points(pos, "pos")
    batch = check_batch(batch, pos.size(0), "batch")
    return voxel_grid_prechecked(pos, size, batch, start, end)


def voxel_grid_prechecked(
    pos: Tensor,
    size: Number | Sequence[Number] | Tensor,
    batch: Tensor | None = None,
    start: Number | Sequence[Number] | Tensor | None = None,
    end: Number | Sequence[Number] | Tensor | None = None,
) -> Tensor:
    """:func:`voxel_grid` for a checked ``pos [N, D]`` and ``batch [N]`` (see
    :mod:`pointset.ops.prechecked`); the grid arguments are still checked."""
    dim = pos.size(1)
    size_t = _per_dim(size, dim, "size", pos)
    if bool((size_t <= 0).any()):
        raise ValueError(f"size must be > 0 in every coordinate, got {size_t.tolist()}")
    lo, hi = pos.min(0).values, pos.max(0).values
    start_t = lo if start is None else _per_dim(start, dim, "start", pos)
    end_t = hi if end is None else _per_dim(end, dim, "end", pos)
    if bool((end_t < start_t).any()):
        raise ValueError(f"end {end_t.tolist()} is below start {start_t.tolist()}")
    outside = (pos < start_t).any(1) | (pos > end_t).any(1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"pos[{i}]={pos[i].tolist()} lies outside the grid [start, end] = "
            f"[{start_t.tolist()}, {end_t.tolist()}] ({int(outside.sum())} points in all)"
        )
    # Voxels per coordinate, checked in float64 before the cast: a float beyond int64
    # would become INT64_MIN and give wrong ids.
    span = (end_t.double() - start_t.double()) / size_t.double()
    too_many = ~(span < 2**62)  # also NaN / inf
    if bool(too_many.any()):
        d = int(too_many.nonzero()[0, 0])
        raise ValueError(
            f"coordinate {d} spans {float(end_t[d]) - float(start_t[d])} = {float(span[d])} "
            f"voxels of size {float(size_t[d])}, more than int64 ids can number; use a larger "
            "size or a smaller extent"
        )
    counts = span.long() + 1
    batch_lo = 0 if batch is None or start is not None else int(batch[0])
    num_clouds = 1 if batch is None else int(batch[-1]) - batch_lo + 1
    total = math.prod(counts.tolist()) * num_clouds
    if total >= 2**63:
        raise ValueError(
            f"the grid has {total} voxels (size {size_t.tolist()}), more than int64 ids can "
            "number; use a larger size"
        )
    strides = torch.cumprod(torch.cat([counts.new_ones(1), counts[:-1]]), 0)
    cell = ((pos - start_t) / size_t).long()
    cluster = (cell * strides).sum(1)
    if batch is not None:
        cluster += (batch - batch_lo) * int(strides[-1] * counts[-1])
    return cluster


class VoxelDownsample(NamedTuple):
    """Result of :func:`voxel_downsample`: one point per occupied voxel."""

    pos: Tensor
    """``[M, D]`` mean position of the points of each voxel."""
    x: Tensor | None
    """``[M, ...]`` mean features (``None`` when no features were given)."""
    batch: Tensor | None
    """``[M]`` cloud index of each voxel, sorted (``None`` when no batch was given)."""
    cluster: Tensor
    """``[N]`` index of the output point (voxel) of every input point."""


def voxel_downsample(
    pos: Tensor,
    size: Number | Sequence[Number] | Tensor,
    batch: Tensor | None = None,
    x: Tensor | None = None,
    start: Number | Sequence[Number] | Tensor | None = None,
    end: Number | Sequence[Number] | Tensor | None = None,
) -> VoxelDownsample:
    """Replace the points of every occupied voxel by their mean (positions and features).

    Args:
        pos: ``[N, D]`` positions.
        size, start, end: the grid, as in :func:`voxel_grid`.
        batch: ``[N]`` sorted cloud index of each point, or ``None``.
        x: ``[N, ...]`` floating features averaged like ``pos``, or ``None``.

    Returns:
        :class:`VoxelDownsample` ``(pos [M, D], x [M, ...], batch [M], cluster [N])``; voxels
        are ordered by voxel id, so clouds stay in batch order.

    Example::

        >>> pos = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
        >>> voxel_downsample(pos, size=2.0).pos
        tensor([[0.5000, 0.5000],
                [3.0000, 0.0000]])
    """
    check_points(pos, "pos")
    batch = check_batch(batch, pos.size(0), "batch")
    return voxel_downsample_prechecked(pos, size, batch, x, start, end)


def voxel_downsample_prechecked(
    pos: Tensor,
    size: Number | Sequence[Number] | Tensor,
    batch: Tensor | None = None,
    x: Tensor | None = None,
    start: Number | Sequence[Number] | Tensor | None = None,
    end: Number | Sequence[Number] | Tensor | None = None,
) -> VoxelDownsample:
    """:func:`voxel_downsample` for a checked ``pos [N, D]`` and ``batch [N]`` (see
    :mod:`pointset.ops.prechecked`); ``x`` and the grid arguments are still checked."""
    cluster = voxel_grid_prechecked(pos, size, batch, start, end)
    if x is not None:
        if not isinstance(x, Tensor) or x.dim() == 0 or x.size(0) != pos.size(0):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must have shape [{pos.size(0)}, ...] (one row per point), got {shape}"
            )
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor to be averaged, got dtype {x.dtype}")
        if x.device != pos.device:
            raise ValueError(f"x is on {x.device} but pos is on {pos.device}")
    voxels, inverse = torch.unique(cluster, return_inverse=True)
    num = voxels.numel()
    counts = torch.bincount(inverse, minlength=num)

    def mean(values: Tensor) -> Tensor:
        sums = values.new_zeros((num, *values.shape[1:])).index_add_(0, inverse, values)
        return sums / counts.view(-1, *([1] * (values.dim() - 1))).to(values.dtype)

    out_batch = None
    if batch is not None:
        out_batch = batch.new_empty(num).scatter_(0, inverse, batch)
    return VoxelDownsample(
        pos=mean(pos), x=None if x is None else mean(x), batch=out_batch, cluster=inverse
    )
