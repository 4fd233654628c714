"""Exact k-nearest neighbours in pure PyTorch (CPU and CUDA), chunked brute force."""

from __future__ import annotations

import torch
from torch import Tensor

#: Pairwise distances held at once per query block (elements), bounding peak memory.
BLOCK_ELEMENTS = 1 << 22


def smallest_k(dist: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries of every row of ``dist: [..., N]``, ascending, ties to the
    lower index. Returns ``(values [..., k], indices [..., k])``."""
    values, index = torch.topk(dist, k, dim=-1, largest=False, sorted=True)
    kth = values[..., -1:]
    if bool(((dist <= kth).sum(-1) == k).all()):
        # No tie crosses the k-th place: the set is right, only order ties by index.
        index, perm = index.sort(-1)
        values = values.gather(-1, perm)
        values, perm = values.sort(dim=-1, stable=True)
        return values, index.gather(-1, perm)
    # Some row has more candidates at the k-th distance than places left: keep the lowest.
    below = dist < kth
    tied = dist == kth
    room = k - below.sum(-1, keepdim=True)
    keep = below | (tied & (tied.cumsum(-1) <= room))
    index = keep.nonzero()[:, -1].view(*dist.shape[:-1], k)
    values = dist.gather(-1, index)
    values, perm = values.sort(dim=-1, stable=True)
    return values, index.gather(-1, perm)


def knn_padded(
    x: Tensor,
    y: Tensor,
    k: int,
    x_counts: Tensor | None = None,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exact kNN of padded query clouds in padded point clouds.

    Args:
        x: ``[B, N, D]`` points searched; row ``b`` valid in its first ``x_counts[b]`` slots.
        y: ``[B, M, D]`` queries.
        k: neighbours per query (at most the smallest valid count).
        x_counts: ``[B]`` valid points per cloud of ``x``, or ``None`` when all are valid.
        exclude_self: skip ``x[b, i]`` for query ``y[b, i]`` (``x`` and ``y`` are the same
            clouds), as a graph without self loops needs.

    Returns:
        ``(dist2 [B, M, k], idx [B, M, k])`` ascending squared distances and local indices,
        ties to the lower index.

    Distances are direct differences accumulated coordinate by coordinate in the input dtype,
    ``((y0 - x0)^2 + (y1 - x1)^2) + ...``, never the expanded ``|y|^2 - 2 y.x + |x|^2`` form,
    so they equal a plain reference loop bit for bit. Queries run in blocks of at most
    :data:`BLOCK_ELEMENTS` pairwise distances.
    """
    num_clouds, size, dim = x.shape
    queries = y.size(1)
    xp = x.permute(2, 0, 1).unsqueeze(2)  # [D, B, 1, N]
    yp = y.permute(2, 0, 1).unsqueeze(3)  # [D, B, M, 1]
    pad = None
    if x_counts is not None:
        pad = torch.arange(size, device=x.device) >= x_counts.unsqueeze(1)  # [B, N]
        pad = pad.unsqueeze(1)
    block = max(1, BLOCK_ELEMENTS // max(1, num_clouds * size))
    dist_out = torch.empty(num_clouds, queries, k, dtype=x.dtype, device=x.device)
    idx_out = torch.empty(num_clouds, queries, k, dtype=torch.long, device=x.device)
    for q0 in range(0, queries, block):
        q1 = min(queries, q0 + block)
        d = torch.sub(yp[0, :, q0:q1], xp[0]).square_()
        if dim > 1:
            diff = torch.empty_like(d)
            for c in range(1, dim):
                torch.sub(yp[c, :, q0:q1], xp[c], out=diff)
                d.add_(diff.square_())
        if pad is not None:
            d.masked_fill_(pad, float("inf"))
        if exclude_self:
            rows = torch.arange(q1 - q0, device=x.device)
            d[:, rows, rows + q0] = float("inf")
        values, index = smallest_k(d, k)
        dist_out[:, q0:q1] = values
        idx_out[:, q0:q1] = index
    return dist_out, idx_out
