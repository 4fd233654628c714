"""Cluster plans for :class:`~pointset.nn.ContextCluster`: which points feed which center.

A Context Cluster layer needs three pieces of structure besides the features:

* the **centers** (``num_centers`` of them, indexed ``0 .. M-1`` over the whole batch);
* the **pooling edges** ``pool_index [2, P]`` (row 0: point, row 1: center): a center's
  features are the mean of the features of its pooling members;
* the **candidate edges** ``cand_index [2, E]`` (row 0: point, row 1: center): each point is
  compared with its candidate centers and assigned to the most similar one. Among equally
  similar candidates the one whose edge comes first in ``cand_index`` wins.

:class:`ClusterPlan` holds them. :func:`grid_plan` builds the plan that the official image
model uses on a feature map (contiguous fold regions, overlapping adaptive-average-pooling
windows as centers, every center of its region a candidate of a point), so that the general
point path reproduces the dense grid path. :func:`point_plan` builds the plan for any point
set: FPS centers (or caller-supplied center positions), centers pooled from their ``k``
nearest points, and each point's nearest centers as candidates. Positions depend only on the
stage, not on the block, so one plan can serve every block of a stage.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from pointset._checks import batch_counts, check_batch, check_points, check_positive_int
from pointset.ops.prechecked import fps, knn


class ClusterPlan(NamedTuple):
    """Centers, pooling edges and candidate edges of a Context Cluster layer.

    Attributes:
        pool_index: ``[2, P]`` long; ``(point, center)`` pairs. Center features (and value
            centers) are the mean over their pooling members.
        cand_index: ``[2, E]`` long; ``(point, center)`` pairs. Each point is assigned to its
            most similar candidate; ties go to the edge listed first.
        num_centers: ``M``, the number of centers in the whole batch.
        center_pos: optional ``[M, D]`` center positions (for inspection / plotting).
        center_batch: optional ``[M]`` cloud index of each center.
    """

    pool_index: Tensor
    cand_index: Tensor
    num_centers: int
    center_pos: Tensor | None = None
    center_batch: Tensor | None = None

    def validate(self, num_points: int) -> ClusterPlan:
        """Check the plan against ``num_points`` points; raise ``ValueError`` if it is unusable.

        Every index must lie in range, every center must have at least one pooling member
        and every point at least one candidate.
        """
        m = int(self.num_centers)
        if m < 1:
            raise ValueError(f"plan.num_centers must be >= 1, got {m}")
        for name in ("pool_index", "cand_index"):
            idx = getattr(self, name)
            if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.size(0) != 2:
                shape = tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__
                raise ValueError(f"plan.{name} must be a [2, E] tensor, got {shape}")
            if idx.is_floating_point() or idx.dtype == torch.bool:
                raise ValueError(f"plan.{name} must be an integer tensor, got {idx.dtype}")
            if idx.numel() == 0:
                raise ValueError(f"plan.{name} has no edges")
            lo_p, hi_p = int(idx[0].min()), int(idx[0].max())
            lo_c, hi_c = int(idx[1].min()), int(idx[1].max())
            if lo_p < 0 or hi_p >= num_points:
                raise ValueError(
                    f"plan.{name} point indices span [{lo_p}, {hi_p}], "
                    f"outside the {num_points} points"
                )
            if lo_c < 0 or hi_c >= m:
                raise ValueError(
                    f"plan.{name} center indices span [{lo_c}, {hi_c}], outside the {m} centers"
                )
        members = torch.bincount(self.pool_index[1], minlength=m)
        if bool((members == 0).any()):
            bad = int((members == 0).nonzero()[0, 0])
            raise ValueError(f"center {bad} of the plan has no pooling member")
        cands = torch.bincount(self.cand_index[0], minlength=num_points)
        if bool((cands == 0).any()):
            bad = int((cands == 0).nonzero()[0, 0])
            raise ValueError(f"point {bad} has no candidate center in the plan")
        return self


def adaptive_windows(size: int, parts: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` windows of adaptive average pooling of ``size`` cells into ``parts``.

    ``start = floor(i * size / parts)``, ``end = ceil((i + 1) * size / parts)``; windows
    overlap when ``parts`` does not divide ``size`` (e.g. 7 into 2: ``[0, 4)`` and ``[3, 7)``).
    """
    check_positive_int(size, "size")
    check_positive_int(parts, "parts")
    return [((i * size) // parts, -((-(i + 1) * size) // parts)) for i in range(parts)]


def _axis_membership(size: int, parts: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(cell, window)`` pairs of one axis: which adaptive windows contain each cell."""
    cells, windows = [], []
    for w, (start, end) in enumerate(adaptive_windows(size, parts)):
        cells.extend(range(start, end))
        windows.extend([w] * (end - start))
    return (
        torch.tensor(cells, dtype=torch.long, device=device),
        torch.tensor(windows, dtype=torch.long, device=device),
    )


def folds(fold_w: int, fold_h: int) -> tuple[int, int]:
    """Effective fold counts: regions are used only when both folds exceed 1 (official rule)."""
    return (fold_w, fold_h) if fold_w > 1 and fold_h > 1 else (1, 1)


def grid_shapes(grid_size, num_points: int) -> list[tuple[int, int]]:
    """Parse a grid record into one ``(H, W)`` per cloud and check it covers ``num_points``.

    ``grid_size`` is ``(H, W)``, a ``[2]`` tensor (every cloud that size; the cloud count
    follows from ``num_points``) or a ``[B, 2]`` tensor (one row per cloud, as
    :class:`~pointset.data.PointSet` stores it). Raises ``ValueError`` when the record is
    malformed or its grids do not add up to ``num_points``.
    """
    size = torch.as_tensor(grid_size.detach().cpu() if isinstance(grid_size, Tensor) else grid_size)
    if size.is_floating_point() or size.dtype == torch.bool:
        raise ValueError(f"grid_size must hold integers, got {grid_size!r}")
    if size.dim() == 1:
        size = size.view(1, -1)
    if size.dim() != 2 or size.size(1) != 2 or size.size(0) == 0:
        raise ValueError(f"grid_size must be (H, W) or [B, 2], got {grid_size!r}")
    if int(size.min()) < 1:
        raise ValueError(f"grid_size entries must be >= 1, got {size.tolist()}")
    shapes = [(int(h), int(w)) for h, w in size.tolist()]
    if len(shapes) == 1:
        h, w = shapes[0]
        if num_points % (h * w):
            raise ValueError(f"{num_points} points do not form whole {h}x{w} grids")
        return shapes * (num_points // (h * w))
    total = sum(h * w for h, w in shapes)
    if total != num_points:
        raise ValueError(
            f"grid_size {size.tolist()} covers {total} points, but there are {num_points}"
        )
    return shapes


def grid_runs(grid_size, x: Tensor) -> Iterator[tuple[tuple[int, int], Tensor]]:
    """Split packed grid points ``x [N, ...]`` into runs of consecutive same-size grids.

    Yields ``((H, W), part)`` with ``part`` holding a whole number of ``H x W`` grids, so a
    dense layer can process each run in one call.
    """
    shapes = grid_shapes(grid_size, x.size(0))
    start = i = 0
    while i < len(shapes):
        j = i
        while j < len(shapes) and shapes[j] == shapes[i]:
            j += 1
        h, w = shapes[i]
        count = (j - i) * h * w
        yield shapes[i], x[start : start + count]
        start, i = start + count, j


def grid_plan(
    batch_size: int,
    height: int,
    width: int,
    proposal_w: int = 2,
    proposal_h: int = 2,
    fold_w: int = 2,
    fold_h: int = 2,
    device: torch.device | str | None = None,
) -> ClusterPlan:
    """The plan of the official dense path on ``batch_size`` row-major ``height x width`` grids.

    Points are numbered ``b * height * width + row * width + col``. As in the official code,
    ``*_w`` acts on rows and ``*_h`` on columns. The map is cut into ``fold_w x fold_h``
    contiguous regions (only if both folds exceed 1); each region holds
    ``proposal_w x proposal_h`` centers pooled over the adaptive-average-pooling windows of the
    region, and every point has all centers of its region as candidates, in pooling-output
    order (so ties resolve as in the dense path). ``center_pos`` holds the window centroids
    in ``(row, col)`` cell units.

    Raises:
        ValueError: if a fold does not divide the map or a size is not positive.
    """
    for name, value in (
        ("batch_size", batch_size),
        ("height", height),
        ("width", width),
        ("proposal_w", proposal_w),
        ("proposal_h", proposal_h),
        ("fold_w", fold_w),
        ("fold_h", fold_h),
    ):
        check_positive_int(value, name)
    fw, fh = folds(fold_w, fold_h)
    if height % fw or width % fh:
        raise ValueError(
            f"the feature map ({height}x{width}) must be divisible by the folds ({fw}x{fh})"
        )
    device = torch.device(device) if device is not None else torch.device("cpu")
    rh, rw = height // fw, width // fh
    per_region = proposal_w * proposal_h

    lr, la = _axis_membership(rh, proposal_w, device)
    lc, lb = _axis_membership(rw, proposal_h, device)
    b = torch.arange(batch_size, device=device).view(-1, 1, 1, 1, 1)
    f1 = torch.arange(fw, device=device).view(1, -1, 1, 1, 1)
    f2 = torch.arange(fh, device=device).view(1, 1, -1, 1, 1)
    region = (b * fw + f1) * fh + f2

    # pooling edges: every (row-membership, col-membership) combination in every region
    row = f1 * rh + lr.view(1, 1, 1, -1, 1)
    col = f2 * rw + lc.view(1, 1, 1, 1, -1)
    pool_point = b * height * width + row * width + col
    pool_center = (
        region * per_region + la.view(1, 1, 1, -1, 1) * proposal_h + lb.view(1, 1, 1, 1, -1)
    )
    pool_point, pool_center = torch.broadcast_tensors(pool_point, pool_center)

    # candidate edges: each point -> every center of its region, candidates innermost
    points = torch.arange(batch_size * height * width, device=device)
    p_b = points // (height * width)
    p_r = (points // width) % height
    p_c = points % width
    p_region = (p_b * fw + p_r // rh) * fh + p_c // rw
    cand_center = p_region.view(-1, 1) * per_region + torch.arange(per_region, device=device)
    cand_point = points.view(-1, 1).expand_as(cand_center)

    # centroids of the pooling windows, in cell units
    rows = torch.tensor(
        [(s + e - 1) / 2 for s, e in adaptive_windows(rh, proposal_w)], device=device
    )
    cols = torch.tensor(
        [(s + e - 1) / 2 for s, e in adaptive_windows(rw, proposal_h)], device=device
    )
    c_row = (f1 * rh).view(1, fw, 1, 1, 1) + rows.view(1, 1, 1, -1, 1)
    c_col = (f2 * rw).view(1, 1, fh, 1, 1) + cols.view(1, 1, 1, 1, -1)
    c_row, c_col = torch.broadcast_tensors(
        c_row.expand(batch_size, -1, -1, -1, -1), c_col.expand(batch_size, -1, -1, -1, -1)
    )
    center_pos = torch.stack([c_row.reshape(-1), c_col.reshape(-1)], dim=1)
    num_centers = batch_size * fw * fh * per_region
    center_batch = torch.arange(batch_size, device=device).repeat_interleave(fw * fh * per_region)

    return ClusterPlan(
        pool_index=torch.stack([pool_point.reshape(-1), pool_center.reshape(-1)]),
        cand_index=torch.stack([cand_point.reshape(-1), cand_center.reshape(-1)]),
        num_centers=num_centers,
        center_pos=center_pos,
        center_batch=center_batch,
    )


def point_plan(
    pos: Tensor,
    batch: Tensor | None = None,
    num_centers: int | None = None,
    center_ratio: float | None = None,
    center_k: int = 16,
    candidates: int = 4,
    centers: Tensor | None = None,
    center_batch: Tensor | None = None,
) -> ClusterPlan:
    """The plan for a general point set (any dimension, clouds of unequal size).

    Centers are ``centers`` if given (``[M, D]`` positions with ``center_batch``), otherwise
    farthest-point samples of each cloud: ``num_centers`` per cloud, or
    ``ceil(center_ratio * n)``. A center is pooled from its ``center_k`` nearest points of the
    same cloud; each point's candidates are its ``candidates`` nearest centers (ascending
    distance, so ties in similarity go to the nearer center).

    Args:
        pos: ``[N, D]`` point positions.
        batch: ``[N]`` sorted cloud index, or ``None`` for one cloud.
        num_centers / center_ratio: FPS centers per cloud (one of them; ignored with
            ``centers``).
        center_k: points averaged into each center feature.
        candidates: nearest centers each point is compared with.
        centers: ``[M, D]`` caller-chosen center positions.
        center_batch: ``[M]`` cloud index of ``centers``.

    Raises:
        ValueError: for malformed positions, an empty cloud, or a cloud with fewer points
            than ``center_k`` / ``num_centers`` or fewer centers than ``candidates``.
    """
    check_points(pos, "pos")
    n = pos.size(0)
    batch = check_batch(batch, n)
    counts = batch_counts(batch, n).to(pos.device)
    if bool((counts == 0).any()):
        bad = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"cloud {bad} of the batch is empty; every cloud needs points")
    check_positive_int(center_k, "center_k")
    check_positive_int(candidates, "candidates")
    small = int(counts.min())
    if small < center_k:
        bad = int((counts < center_k).nonzero()[0, 0])
        raise ValueError(
            f"cloud {bad} has {int(counts[bad])} points, fewer than center_k={center_k}"
        )

    if centers is None:
        if num_centers is None:
            if center_ratio is None:
                raise ValueError("give num_centers, center_ratio or centers")
            if not 0.0 < center_ratio <= 1.0:
                raise ValueError(f"center_ratio must lie in (0, 1], got {center_ratio}")
            per_cloud = torch.tensor(
                [math.ceil(center_ratio * int(c)) for c in counts.tolist()], device=pos.device
            )
            idx = fps(pos, batch, ratio=center_ratio)
        else:
            check_positive_int(num_centers, "num_centers")
            if small < num_centers:
                bad = int((counts < num_centers).nonzero()[0, 0])
                raise ValueError(
                    f"cloud {bad} has {int(counts[bad])} points, fewer than "
                    f"num_centers={num_centers}"
                )
            per_cloud = torch.full_like(counts, num_centers)
            idx = fps(pos, batch, num=num_centers)
        centers = pos[idx]
        center_batch = None if batch is None else batch[idx]
    else:
        check_points(centers, "centers")
        if centers.size(1) != pos.size(1):
            raise ValueError(
                f"centers must have the same number of coordinates as pos ({pos.size(1)}), "
                f"got shape {tuple(centers.shape)}"
            )
        center_batch = check_batch(center_batch, centers.size(0), "center_batch")
        if (center_batch is None) != (batch is None):
            raise ValueError("give center_batch together with batch (or neither)")
        per_cloud = batch_counts(center_batch, centers.size(0), counts.numel()).to(pos.device)
        if per_cloud.numel() != counts.numel():
            raise ValueError(
                f"centers belong to {per_cloud.numel()} clouds but the points to {counts.numel()}"
            )
    if int(per_cloud.min()) < candidates:
        bad = int((per_cloud < candidates).nonzero()[0, 0])
        raise ValueError(
            f"cloud {bad} has {int(per_cloud[bad])} centers, fewer than candidates={candidates}"
        )

    pool = knn(pos, centers, center_k, batch, center_batch)  # row 0: center, row 1: point
    cand = knn(centers, pos, candidates, center_batch, batch)  # row 0: point, row 1: center
    return ClusterPlan(
        pool_index=torch.stack([pool[1], pool[0]]),
        cand_index=cand,
        num_centers=centers.size(0),
        center_pos=centers,
        center_batch=center_batch,
    )
