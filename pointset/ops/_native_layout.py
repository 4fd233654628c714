"""Input checks and packed (PyG) <-> padded ``[B, N, D]`` conversions for FPS and kNN."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import check_batch


def cloud_ptr(counts: Tensor) -> Tensor:
    """Start offset of every cloud ``[B]`` from the points per cloud ``counts: [B]``."""
    return torch.cumsum(counts, 0) - counts


def to_padded(pos: Tensor, batch: Tensor | None, counts: Tensor, max_count: int) -> Tensor:
    """Scatter packed points ``pos: [N, D]`` into a zero-padded ``[B, max_count, D]`` tensor.

    ``batch: [N]`` is sorted (or ``None`` for one cloud) and ``counts: [B]`` holds the points
    per cloud. Cloud ``b`` occupies rows ``0 .. counts[b]-1`` of slot ``b``.
    """
    if batch is None:
        return pos.unsqueeze(0)
    num_clouds = counts.numel()
    if bool((counts == max_count).all()):
        return pos.reshape(num_clouds, max_count, pos.size(1))
    local = torch.arange(pos.size(0), device=pos.device) - cloud_ptr(counts)[batch]
    out = pos.new_zeros(num_clouds, max_count, pos.size(1))
    out[batch, local] = pos
    return out


def valid_mask(counts: Tensor, size: int) -> Tensor:
    """``[B, size]`` boolean mask, true for the first ``counts[b]`` slots of row ``b``."""
    return torch.arange(size, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)


def cloud_counts(batch: Tensor | None, num_points: int, name: str = "batch", size: int = 0):
    """Validate ``batch`` and count the points per cloud.

    Returns ``(batch, counts)``: the batch vector as long (or ``None``) and a list with the
    points of clouds ``0 .. max(batch)`` (at least ``size`` entries). Sorted integer CPU
    vectors are checked with NumPy; the rest goes through ``check_batch``, which raises.
    """
    if batch is None:
        return None, [num_points] + [0] * max(0, size - 1)
    if (
        isinstance(batch, Tensor)
        and batch.dim() == 1
        and batch.numel() == num_points > 0
        and batch.device.type == "cpu"
        and batch.dtype in (torch.int64, torch.int32)
    ):
        b = batch.numpy()
        if b[0] >= 0 and bool((b[1:] >= b[:-1]).all()):
            return batch.long(), np.bincount(b, minlength=size).tolist()
    batch = check_batch(batch, num_points, name)
    if num_points == 0:
        return batch, [0] * size
    return batch, torch.bincount(batch, minlength=size).tolist()


def to_padded_numpy(pos: np.ndarray, counts: list[int], max_count: int) -> np.ndarray:
    """NumPy version of :func:`to_padded` for packed ``pos: [N, D]`` with ``counts``."""
    num_clouds = len(counts)
    if all(n == max_count for n in counts):
        return pos.reshape(num_clouds, max_count, pos.shape[1])
    out = np.zeros((num_clouds, max_count, pos.shape[1]), dtype=pos.dtype)
    start = 0
    for b, n in enumerate(counts):
        out[b, :n] = pos[start : start + n]
        start += n
    return out
