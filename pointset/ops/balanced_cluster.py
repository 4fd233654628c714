"""Balanced clustering along a space-filling curve of anchors (AutoFocusFormer).

From `"AutoFocusFormer: Image Segmentation off the Grid" <https://arxiv.org/abs/2304.12406>`_
(Ziwen et al., CVPR 2023), Sec. 3.1.1. Every cloud of ``n`` points is cut into
``k = ceil(n / m)`` clusters of exactly ``m = cluster_size`` points (the last one is padded):

1. **Anchor grid.** With ``k`` target clusters, the anchor cell side is
   ``patch_len = (V / k) ** (1 / D)`` for a box of volume ``V`` (``D`` coordinates); axis ``d``
   of extent ``E_d`` gets ``round(E_d / patch_len)`` cells (Python ``round``, at least 1) of
   side ``E_d / cells``.
2. **Space-filling order of the anchors.** Cells are visited in boustrophedon order: the last
   coordinate is the outermost loop, and every inner row runs opposite to the previous one. In
   2-D (``pos = (x, y)``) this is the row-by-row scan with odd rows reversed. In ``D``
   dimensions the rank is the mixed-radix number of the cell coordinates, from the last axis
   to the first, where a digit is mirrored (``cells_d - 1 - c_d``) whenever the number formed
   by the digits before it is odd. Consecutive cells in this order always share a face, so
   the 3-D order is a snake through slices, rows and columns.
3. **Rank key.** A point in the cell of rank ``a`` with the previous and next anchor centers
   ``p_prev`` and ``p_next`` (linearly extrapolated past the first and last anchor) gets
   ``ratio = |p - p_prev|^2 / (|p - p_next|^2 + 1e-5)`` and the key
   ``a * (max(ratio) + 1) + ratio``, all in float32.
4. **Chunking.** Points are sorted by the key with a **stable** sort (ties keep the incoming
   order) and cut into consecutive chunks of ``m``. Cluster means exclude the padding of the
   last chunk.

Positions are interpreted in one of two ways:

* **lattice** (``extent`` given): the points lie on an integer lattice in ``[0, E_d)`` per
  axis, like image tokens at ``pos = (col, row)`` of an ``H x W`` map, which use
  ``extent=(W, H)``. Cells are ``floor(pos / side)`` and anchor centers
  ``cell * side + side / 2 - 0.5`` (pixel centers). This reproduces the official
  ``space_filling_cluster`` bit for bit, including its exact ties.
* **bounding box** (``extent=None``): any real coordinates. Per cloud, the box from the
  per-axis minimum to maximum is tiled (an axis of zero extent counts as ``max_extent / k``,
  a single-point cloud as a unit box), cells are clamped to the grid and anchor centers are
  the cell midpoints.

All of this runs in float32 whatever the input dtype, so float32 and float64 models make the
same discrete decisions. Only native PyTorch is used; every device works.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .._checks import check_points
from ._clouds import Clouds

__all__ = [
    "BalancedClusters",
    "DenseBalancedClusters",
    "balanced_cluster",
    "balanced_cluster_dense",
]

#: Added to the squared distance to the next anchor, as in the reference.
RATIO_EPS = 1e-5


class DenseBalancedClusters(NamedTuple):
    """Result of :func:`balanced_cluster_dense` for ``B`` clouds of at most ``N`` points.

    Attributes:
        order: ``[B, N]`` long; ``order[b, r]`` is the index of the point ranked ``r``
            (padding slots of shorter clouds come last, in index order).
        member: ``[B, K, m]`` long; point indices of every cluster in rank order. Padding
            slots hold ``order[b, 0]``, the cloud's first-ranked point, as the reference does.
        mask: ``[B, K, m]`` bool; ``True`` for real members.
        centers: ``[B, K, D]`` float32 cluster means over real members (zero for clusters
            that do not exist in a shorter cloud).
        num_clusters: ``[B]`` long; ``ceil(n_b / m)`` clusters per cloud.
    """

    order: Tensor
    member: Tensor
    mask: Tensor
    centers: Tensor
    num_clusters: Tensor


class BalancedClusters(NamedTuple):
    """Result of :func:`balanced_cluster` in the packed layout (``N`` points, ``K`` clusters).

    Attributes:
        cluster: ``[N]`` long; the cluster of every point (ids are consecutive per cloud,
            cloud by cloud).
        perm: ``[N]`` long; the points in cluster order, so ``cluster[perm]`` is sorted and
            cluster ``c`` of a cloud holds its ``m`` consecutive entries.
        centers: ``[K, D]`` cluster means in the dtype of ``pos``.
        center_batch: ``[K]`` long; the cloud of every cluster.
    """

    cluster: Tensor
    perm: Tensor
    centers: Tensor
    center_batch: Tensor


def _check_cluster_size(cluster_size: int) -> int:
    if isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1:
        raise ValueError(f"cluster_size must be a positive int, got {cluster_size!r}")
    return cluster_size


def _check_extent(extent: Sequence[float] | None, dim: int) -> tuple[float, ...] | None:
    if extent is None:
        return None
    values = tuple(float(e) for e in extent)
    if len(values) != dim:
        raise ValueError(
            f"extent must give one size per coordinate ({dim}), got {len(values)}: {extent!r}"
        )
    if not all(math.isfinite(e) and e > 0 for e in values):
        raise ValueError(f"extent sizes must be positive and finite, got {extent!r}")
    return values


def _anchor_grid(count: int, cluster_size: int, extent: Sequence[float]) -> tuple[list, list]:
    """Anchor cells per axis and their side lengths (Python floats, as the reference)."""
    k = math.ceil(count / cluster_size)
    dim = len(extent)
    volume = 1.0
    for e in reversed(extent):  # the reference multiplies h * w, i.e. last axis first
        volume = volume * e
    patch_len = (volume / k) ** 0.5 if dim == 2 else (volume / k) ** (1.0 / dim)
    cells = [max(1, int(round(e / patch_len))) for e in extent]
    sides = [e / c for e, c in zip(extent, cells)]
    return cells, sides


def _snake_rank(cell: Tensor, cells: Tensor) -> Tensor:
    """Boustrophedon rank of integer cells ``cell [B, N, D]`` on grids ``cells [B, D]``."""
    rank = torch.zeros(cell.shape[:2], dtype=torch.long, device=cell.device)
    for axis in reversed(range(cell.size(-1))):
        size = cells[:, axis : axis + 1]
        c = cell[..., axis]
        digit = torch.where(rank % 2 == 1, size - 1 - c, c)
        rank = rank * size + digit
    return rank


def _snake_cell(rank: Tensor, cells: Tensor) -> Tensor:
    """Inverse of :func:`_snake_rank`: cells ``[B, N, D]`` of ranks ``rank [B, N]``."""
    dim = cells.size(1)
    inner = [torch.ones_like(cells[:, 0])]
    for axis in range(1, dim):
        inner.append(inner[-1] * cells[:, axis - 1])
    out = []
    for axis in range(dim):
        stride = inner[axis].unsqueeze(1)
        size = cells[:, axis : axis + 1]
        digit = torch.div(rank, stride, rounding_mode="floor") % size
        prefix = torch.div(rank, stride * size, rounding_mode="floor")
        out.append(torch.where(prefix % 2 == 1, size - 1 - digit, digit))
    return torch.stack(out, dim=-1)


def _cluster_padded(
    pos: Tensor,
    clouds: Clouds,
    cluster_size: int,
    extent: tuple[float, ...] | None,
    per_cloud_max: bool,
) -> DenseBalancedClusters:
    """Core of both layouts on padded clouds ``pos [B, N, D]`` (valid rows: ``clouds``)."""
    num_clouds, size, dim = pos.shape
    device = pos.device
    p = pos.detach().to(torch.float32)
    counts, lengths = clouds.counts_list, clouds.counts
    valid = clouds.valid_mask(size)  # [B, N]

    # per-cloud anchor grids, decided on the host like the reference
    if extent is None:
        big = torch.finfo(torch.float32).max
        lo = p.masked_fill(~valid.unsqueeze(-1), big).amin(1)
        hi = p.masked_fill(~valid.unsqueeze(-1), -big).amax(1)
        origin = lo
        boxes = (hi - lo).tolist()
    else:
        origin = torch.zeros(num_clouds, dim, dtype=torch.float32, device=device)
        boxes = [list(extent)] * num_clouds
    grid_cells, grid_sides = [], []
    for count, box in zip(counts, boxes):
        if extent is None:
            top = max(box)
            k = math.ceil(count / cluster_size)
            box = [1.0] * dim if top == 0 else [e if e > 0 else top / k for e in box]
        c, s = _anchor_grid(count, cluster_size, box)
        grid_cells.append(c)
        grid_sides.append(s)
    cells = torch.tensor(grid_cells, dtype=torch.long, device=device)  # [B, D]
    sides = torch.tensor(grid_sides, dtype=torch.float32, device=device)  # [B, D]
    shift = origin if extent is None else torch.full_like(sides, -0.5)
    num_anchors = cells.prod(1, keepdim=True)  # [B, 1]

    def anchor_center(rank: Tensor) -> Tensor:
        cell = _snake_cell(rank, cells).to(torch.float32)
        return cell * sides.unsqueeze(1) + sides.unsqueeze(1) / 2 + shift.unsqueeze(1)

    cell = torch.floor((p - origin.unsqueeze(1)) / sides.unsqueeze(1)).long()
    cell = torch.minimum(cell.clamp_min(0), (cells - 1).unsqueeze(1))
    rank = _snake_rank(cell, cells)  # [B, N]
    last = num_anchors - 1
    here = anchor_center(rank)
    prev = anchor_center((rank - 1).clamp_min(0))
    nxt = anchor_center(torch.minimum(rank + 1, last))
    first_next = anchor_center(torch.minimum(torch.ones_like(rank), last))
    last_prev = anchor_center((last - 1).clamp_min(0).expand_as(rank))
    prev = torch.where((rank == 0).unsqueeze(-1), here - (first_next - here), prev)
    nxt = torch.where((rank == last).unsqueeze(-1), here + (here - last_prev), nxt)
    single = (num_anchors == 1).unsqueeze(-1)  # one anchor: sweep along the first axis
    step = torch.zeros_like(sides)
    step[:, 0] = sides[:, 0]
    prev = torch.where(single, here - step.unsqueeze(1), prev)
    nxt = torch.where(single, here + step.unsqueeze(1), nxt)

    dist_prev = (p - prev).pow(2).sum(-1)
    dist_next = (p - nxt).pow(2).sum(-1)
    ratio = dist_prev / (dist_next + RATIO_EPS)
    ratio_max = ratio.masked_fill(~valid, float("-inf"))
    ratio_max = ratio_max.amax(1, keepdim=True) if per_cloud_max else ratio_max.max()
    key = rank.to(torch.float32) * (ratio_max + 1) + ratio
    key = key.masked_fill(~valid, float("inf"))
    order = torch.sort(key, dim=1, stable=True).indices  # [B, N]

    num_clusters = [math.ceil(n / cluster_size) for n in counts]
    k_max = max(num_clusters)
    slots = k_max * cluster_size
    ranked = p.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
    slot_valid = torch.arange(slots, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    if slots > size:
        extra = slots - size
        ranked = torch.cat([ranked, ranked.new_zeros(num_clouds, extra, dim)], 1)
        member = torch.cat([order, order[:, :1].expand(-1, extra)], 1)
    else:
        ranked = ranked[:, :slots]
        member = order[:, :slots]
    ranked = ranked.masked_fill(~slot_valid.unsqueeze(-1), 0.0)
    member = torch.where(slot_valid, member, order[:, :1])
    mask = slot_valid.view(num_clouds, k_max, cluster_size)
    total = ranked.view(num_clouds, k_max, cluster_size, dim).sum(2)
    centers = total / mask.sum(2, keepdim=True).clamp_min(1)
    return DenseBalancedClusters(
        order=order,
        member=member.view(num_clouds, k_max, cluster_size),
        mask=mask,
        centers=centers,
        num_clusters=torch.tensor(num_clusters, dtype=torch.long, device=device),
    )


def balanced_cluster_dense(
    pos: Tensor,
    cluster_size: int,
    lengths: Tensor | None = None,
    extent: Sequence[float] | None = None,
    per_cloud: bool = False,
) -> DenseBalancedClusters:
    r"""Balanced space-filling clustering of padded clouds (the layout of the AFF model).

    See the module docstring for the algorithm. As in the reference, the ratio normaliser
    ``max(ratio)`` is taken over all valid points of the whole batch, so clouds of one batch
    share it (``per_cloud=True`` gives every cloud its own, as :func:`balanced_cluster`
    does).

    Args:
        pos: ``[B, N, D]`` positions; cloud ``b`` is valid in its first ``lengths[b]`` rows.
        cluster_size: points per cluster ``m``.
        lengths: ``[B]`` points per cloud (default: all ``N``).
        extent: lattice size per coordinate in the order of ``pos`` (``(W, H)`` for image
            tokens at ``(col, row)``); positions must lie in ``[0, extent)``. ``None`` tiles
            each cloud's bounding box.
        per_cloud: normalise the ratio per cloud instead of over the batch, so a cloud
            gets the same clusters alone as inside any batch.

    Returns:
        :class:`DenseBalancedClusters` with ``K = max_b ceil(n_b / m)``.

    Example::

        >>> ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
        >>> pos = torch.stack([xs, ys], -1).view(1, 16, 2)
        >>> out = balanced_cluster_dense(pos, 4, extent=(4, 4))
        >>> out.member.shape, out.centers.shape
        (torch.Size([1, 4, 4]), torch.Size([1, 4, 2]))
    """
    if not isinstance(pos, Tensor) or pos.dim() != 3:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must have shape [B, N, D], got {shape}")
    num_clouds, size, dim = pos.shape
    check_points(pos.reshape(-1, dim) if num_clouds * size else pos.new_zeros(0, max(dim, 1)))
    return balanced_cluster_dense_prechecked(pos, cluster_size, lengths, extent, per_cloud)


def balanced_cluster_dense_prechecked(
    pos: Tensor,
    cluster_size: int,
    lengths: Tensor | None = None,
    extent: Sequence[float] | None = None,
    per_cloud: bool = False,
) -> DenseBalancedClusters:
    """:func:`balanced_cluster_dense` for ``pos [B, N, D]`` whose values the caller has
    checked (finite floating positions); the scalar, length and extent checks remain."""
    num_clouds, size, dim = pos.shape
    cluster_size = _check_cluster_size(cluster_size)
    box = _check_extent(extent, dim)
    clouds = Clouds.from_lengths(lengths, num_clouds, size, pos.device)
    if any(n < 1 for n in clouds.counts_list):
        raise ValueError(
            f"lengths must lie in [1, {size}] (no empty cloud), got {clouds.counts_list}"
        )
    if num_clouds == 0:
        raise ValueError("pos holds no cloud (B = 0)")
    if box is not None:
        _check_inside(pos, clouds, box)
    return _cluster_padded(pos, clouds, cluster_size, box, per_cloud_max=bool(per_cloud))


def _check_inside(pos: Tensor, clouds: Clouds, extent: tuple[float, ...]) -> None:
    """Every valid row of padded ``pos [B, N, D]`` (``clouds``) lies in ``[0, extent)``."""
    valid = clouds.valid_mask(pos.size(1))
    limit = torch.tensor(extent, dtype=pos.dtype, device=pos.device)
    outside = ((pos < 0) | (pos >= limit)).any(-1) & valid
    if bool(outside.any()):
        b, i = (int(v) for v in outside.nonzero()[0])
        raise ValueError(
            f"with extent={extent}, positions must lie in [0, extent); point {i} of cloud {b} "
            f"is {pos[b, i].tolist()}"
        )


def balanced_cluster(
    pos: Tensor,
    cluster_size: int,
    batch: Tensor | None = None,
    extent: Sequence[float] | None = None,
) -> BalancedClusters:
    r"""Balanced space-filling clustering of every cloud of a packed (PyG) batch.

    Each cloud is clustered on its own (its own anchor grid and ratio normaliser), so a
    cloud gets the same clusters alone as inside any batch. See the module docstring for the
    algorithm and the two ways positions are read.

    Args:
        pos: ``[N, D]`` positions (any ``D >= 1``).
        cluster_size: points per cluster ``m``.
        batch: ``[N]`` sorted cloud index of every point (default: one cloud).
        extent: lattice size per coordinate (see :func:`balanced_cluster_dense`).

    Returns:
        :class:`BalancedClusters`; cloud ``b`` with ``n_b`` points has ``ceil(n_b / m)``
        clusters, all of ``m`` points except possibly its last one.

    Example::

        >>> pos = torch.rand(100, 3)
        >>> out = balanced_cluster(pos, 8)
        >>> torch.bincount(out.cluster).tolist()[-2:]
        [8, 4]
    """
    check_points(pos)
    cluster_size = _check_cluster_size(cluster_size)
    box = _check_extent(extent, pos.size(1))
    clouds = Clouds.from_batch(batch, pos.size(0), pos.device)
    counts = clouds.counts_list
    if any(n == 0 for n in counts):
        raise ValueError(
            f"cloud {counts.index(0)} of the batch is empty (points per cloud: {counts})"
        )
    padded = clouds.to_padded(pos)
    if box is not None:
        _check_inside(padded, clouds, box)
    dense = _cluster_padded(padded, clouds, cluster_size, box, per_cloud_max=True)

    num_clouds = len(counts)
    device = pos.device
    ranks = torch.arange(padded.size(1), device=device).unsqueeze(0)
    perm = clouds.unpad(dense.order + clouds.ptr[:-1].unsqueeze(1))
    cluster_clouds = Clouds.from_lengths(dense.num_clusters, device=device)
    cluster_ptr = cluster_clouds.ptr[:-1]
    local_cluster = torch.div(ranks, cluster_size, rounding_mode="floor")
    cluster_sorted = clouds.unpad((local_cluster + cluster_ptr.unsqueeze(1)).expand(num_clouds, -1))
    cluster = torch.empty_like(perm)
    cluster[perm] = cluster_sorted
    exists = torch.arange(dense.centers.size(1), device=device).unsqueeze(0) < (
        dense.num_clusters.unsqueeze(1)
    )
    centers = dense.centers[exists].to(pos.dtype)
    center_batch = cluster_clouds.batch
    return BalancedClusters(cluster=cluster, perm=perm, centers=centers, center_batch=center_batch)
