"""Packed (PyG) <-> padded dense layouts.

Packed: all clouds stacked, ``x [N, *]`` plus a sorted ``batch [N]``.
Padded: ``dense [B, Nmax, *]`` plus a boolean ``mask [B, Nmax]`` that is True on real
points; each cloud's points come first in its row, in packed order.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from .._checks import check_batch


def to_dense(
    x: Tensor,
    batch: Tensor | None = None,
    fill_value: float = 0.0,
    max_num: int | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Packed ``x [N, *]`` -> ``(dense [B, Nmax, *], mask [B, Nmax])``.

    Args:
        x: ``[N, *]`` per-point values (features or positions).
        batch: ``[N]`` sorted cloud index, or ``None`` for one cloud.
        fill_value: value of the padding entries.
        max_num: ``Nmax``; defaults to the largest cloud. A cloud larger than ``max_num``
            raises ``ValueError`` (nothing is dropped silently).
        batch_size: ``B``; defaults to ``batch.max() + 1``. Use it to keep trailing empty
            clouds.

    Example::

        >>> dense, mask = to_dense(torch.arange(6.).view(3, 2), torch.tensor([0, 0, 1]))
        >>> dense.shape, mask.tolist()
        (torch.Size([2, 2, 2]), [[True, True], [True, False]])
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a tensor of shape [N, ...], got {getattr(x, 'shape', x)!r}")
    batch = check_batch(batch, x.size(0))
    if batch is not None and batch.device != x.device:
        raise ValueError(f"batch is on {batch.device} but x is on {x.device}")
    if batch is None:
        batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        inferred = 1 if x.size(0) else 0
    else:
        inferred = int(batch.max()) + 1 if batch.numel() else 0
    if batch_size is None:
        batch_size = inferred
    elif batch_size < inferred:
        raise ValueError(f"batch_size={batch_size} but batch refers to cloud {inferred - 1}")
    counts = torch.bincount(batch, minlength=batch_size)
    largest = int(counts.max()) if counts.numel() else 0
    if max_num is None:
        max_num = largest
    elif max_num < largest:
        cloud = int(counts.argmax())
        raise ValueError(
            f"max_num={max_num} is smaller than cloud {cloud}, which has {largest} points"
        )
    if batch_size == 0:
        return x.new_full((0, max_num, *x.shape[1:]), fill_value), torch.zeros(
            0, max_num, dtype=torch.bool, device=x.device
        )
    return to_dense_batch(x, batch, fill_value, max_num_nodes=max_num, batch_size=batch_size)


def from_dense(dense: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Padded ``dense [B, Nmax, *]`` + ``mask [B, Nmax]`` -> packed ``(x [N, *], batch [N])``.

    Points are taken row by row in mask order. ``mask=None`` keeps every entry. The
    inverse of :func:`to_dense` (whose masks are left-aligned); other masks are accepted
    too.
    """
    if not isinstance(dense, Tensor) or dense.dim() < 2:
        raise ValueError(
            f"dense must be a tensor of shape [B, Nmax, ...], got {getattr(dense, 'shape', dense)!r}"
        )
    b, n = dense.shape[:2]
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=dense.device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if tuple(mask.shape) != (b, n):
        raise ValueError(
            f"mask must have shape [B, Nmax] = [{b}, {n}] to match dense {tuple(dense.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    if mask.device != dense.device:
        raise ValueError(f"mask is on {mask.device} but dense is on {dense.device}")
    x = dense[mask]
    batch = torch.arange(b, device=dense.device).repeat_interleave(mask.sum(dim=1))
    return x, batch
