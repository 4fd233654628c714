"""Classifying RGBD frames as coloured point sets.

:func:`rgbd_input` turns the point set of an RGBD frame (:func:`~pointset.data.from_rgbd`)
into the ``[B, 6, N]`` xyz + rgb input of a point-cloud classifier such as
``rgbd_pointmlp_coc``, PointMLP-CoC with six input channels (registered in
:mod:`pointset.models.pointmlp`)::

    >>> frame = pointset.from_rgbd(color, depth, intrinsics)
    >>> model = create_model("rgbd_pointmlp_coc", num_classes=10)
    >>> logits = model(rgbd_input(frame, num_points=1024))
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from pointset.data.point_set import PointSet
from pointset.ops import fps

__all__ = ["rgbd_input"]


def rgbd_input(points: PointSet, num_points: int = 1024, with_color: bool = True) -> Tensor:
    """The classifier input of (a batch of) coloured point sets.

    Per cloud:

    1. **centre and scale:** positions minus the cloud's centroid, divided by the largest
       distance of a point from it, so the cloud fits the unit sphere (the ModelNet /
       ScanObjectNN convention); a single-point cloud keeps scale 1;
    2. **sampling:** farthest point sampling of ``num_points`` points starting from the
       cloud's first point (deterministic). A cloud with fewer points keeps all of them,
       repeated cyclically (``0, 1, ..., n-1, 0, 1, ...``) up to ``num_points``; duplicates
       change neither the max-pooled features nor the kNN groups' maxima;
    3. **channels:** ``xyz`` followed by the features ``points.x`` (rgb in ``[0, 1]`` for
       :func:`~pointset.data.from_rgbd`) when ``with_color``.

    Args:
        points: ``PointSet`` with ``pos [N, 3]`` (and ``x [N, C]``), one cloud or a batch.
        num_points: points per cloud in the output (default: 1024).
        with_color: append ``points.x`` after ``xyz`` (default: ``True``).

    Returns:
        ``[B, 3 + C, num_points]`` (``[B, 3, num_points]`` without colour), on the points'
        device, in the dtype of ``pos``.

    Raises:
        ValueError: not a 3-D point set, an empty cloud, missing features, or
            ``num_points < 1``.
    """
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    pos = points.pos
    if pos is None or pos.dim() != 2 or pos.size(1) != 3:
        shape = None if pos is None else tuple(pos.shape)
        raise ValueError(f"points.pos must have shape [N, 3], got {shape}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    feats = points.x if with_color else None
    if with_color and (feats is None or feats.dim() != 2):
        raise ValueError("points.x (e.g. rgb) is needed with with_color=True")
    num_clouds = points.num_clouds
    batch = (
        points.batch if points.batch is not None else pos.new_zeros(pos.size(0), dtype=torch.long)
    )
    counts = torch.bincount(batch, minlength=num_clouds)
    if bool((counts == 0).any()):
        raise ValueError(f"cloud {int((counts == 0).nonzero()[0, 0])} of the batch is empty")

    centre = scatter(pos, batch, 0, num_clouds, reduce="mean")
    centred = pos - centre[batch]
    radius = scatter(centred.norm(dim=1), batch, 0, num_clouds, reduce="max")
    radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    xyz = centred / radius[batch].unsqueeze(1)
    channels = xyz if feats is None else torch.cat([xyz, feats.to(xyz.dtype)], dim=1)

    starts = torch.cumsum(counts, 0) - counts
    big = counts >= num_points
    index = torch.empty(num_clouds, num_points, dtype=torch.long, device=pos.device)
    if bool(big.any()):
        clouds = big.nonzero().flatten()
        member = big[batch]
        compact = (torch.cumsum(big.long(), 0) - 1)[batch[member]]  # clouds renumbered 0..
        local = fps(pos[member], compact, num=num_points)  # indices into pos[member]
        packed = member.nonzero().flatten()[local]
        index[clouds] = packed.view(-1, num_points)
    if not bool(big.all()):
        clouds = (~big).nonzero().flatten()
        cycle = torch.arange(num_points, device=pos.device)
        index[clouds] = starts[clouds, None] + cycle % counts[clouds, None]
    return channels[index].transpose(1, 2).contiguous()
