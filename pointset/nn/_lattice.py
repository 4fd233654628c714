"""Points on integer pixel lattices: the input checks shared by the lattice layers.

A lattice point set is ``pos [N, 2]`` integer ``(row, col)`` cells, ``batch [N]`` and the
lattice extent ``size [B, 2]`` ``(H, W)`` of every cloud. :class:`~pointset.nn.GridPointReducer`
and :meth:`~pointset.nn.ContextCluster.lattice_plan` take this layout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from pointset._checks import batch_counts, check_batch
from pointset.nn.cluster_plan import grid_shapes


def check_lattice(
    pos: Tensor, batch: Tensor | None, size, num_points: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate lattice points and return ``(cells [N, 2] long, batch [N] long, size [B, 2])``.

    ``pos`` holds integer ``(row, col)`` cells (an integer tensor, or a floating one with
    integral values); ``size`` is ``(H, W)`` for every cloud, a ``[B, 2]`` tensor, or
    ``None`` for the largest cell + 1 of each cloud. Raises ``ValueError`` for a wrong
    shape, non-integral or negative cells, cells outside their lattice, a cell listed twice
    in one cloud, or an empty cloud.
    """
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.size(1) != 2:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must be [N, 2] integer (row, col) cells, got {shape}")
    if pos.size(0) != num_points:
        raise ValueError(f"pos has {pos.size(0)} points but x has {num_points}")
    if pos.dtype == torch.bool:
        raise ValueError("pos must hold integer (row, col) cells, got a bool tensor")
    if pos.is_floating_point() and not bool((pos == pos.round()).all()):  # NaN fails too
        raise ValueError("pos must hold integer (row, col) cells, got fractional values")
    cells = pos.long()
    if num_points == 0:
        raise ValueError("x is empty (0 points)")
    if int(cells.min()) < 0:
        raise ValueError(f"lattice cells must be >= 0, got min {int(cells.min())}")
    batch = check_batch(batch, num_points)
    if batch is None:
        batch = cells.new_zeros(num_points)
    counts = batch_counts(batch, num_points)
    num_clouds = counts.numel()
    if bool((counts == 0).any()):
        raise ValueError(f"cloud {int((counts == 0).nonzero()[0, 0])} of the batch is empty")
    if size is None:
        size = scatter(cells, batch, 0, num_clouds, reduce="max") + 1
    else:
        size = torch.as_tensor(size, device=cells.device)
        if size.is_floating_point() or size.dtype == torch.bool:
            raise ValueError(f"size must hold integers, got {size.tolist()}")
        size = size.long().view(-1, 2) if size.numel() == 2 else size.long()
        if size.dim() != 2 or size.size(1) != 2:
            raise ValueError(f"size must be (H, W) or [B, 2], got shape {tuple(size.shape)}")
        if size.size(0) == 1:
            size = size.expand(num_clouds, 2)
        if size.size(0) != num_clouds:
            raise ValueError(f"size has {size.size(0)} rows but the batch has {num_clouds} clouds")
        if int(size.min()) < 1:
            raise ValueError(f"lattice sizes must be >= 1, got {size.tolist()}")
    outside = (cells >= size[batch]).any(1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"cell {cells[i].tolist()} of cloud {int(batch[i])} lies outside its lattice "
            f"{size[batch[i]].tolist()}"
        )
    height, width = (int(v) for v in size.max(0).values)
    key = (batch * height + cells[:, 0]) * width + cells[:, 1]
    if torch.unique(key).numel() != num_points:
        raise ValueError("a cell appears twice in a cloud; each cell may hold one point")
    return cells, batch, size


def full_lattice(grid_size, num_points: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(cells, batch, size)`` of packed whole grids in row-major order, from a grid record
    ``(H, W)`` or ``[B, 2]`` (see :func:`~pointset.nn.cluster_plan.grid_shapes`)."""
    shapes = grid_shapes(grid_size, num_points)
    size = torch.tensor(shapes, dtype=torch.long, device=device)
    counts = size.prod(1)
    batch = torch.repeat_interleave(torch.arange(len(shapes), device=device), counts)
    local = torch.arange(num_points, device=device) - (torch.cumsum(counts, 0) - counts)[batch]
    width = size[batch, 1]
    return torch.stack([local // width, local % width], dim=1), batch, size


def is_row_major_grid(cells: Tensor, batch: Tensor, size: Tensor) -> bool:
    """Every cloud holds every cell of its lattice, listed in row-major order, and all the
    lattices have one size (the layout of a batch of whole images)."""
    if not bool((size == size[:1]).all()):
        return False
    h, w = (int(v) for v in size[0])
    if cells.size(0) != size.size(0) * h * w:
        return False
    key = (batch * h + cells[:, 0]) * w + cells[:, 1]
    return bool((key == torch.arange(key.numel(), device=key.device)).all())
