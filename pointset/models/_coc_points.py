"""Pixel point sets as input of the Context Cluster backbone's general path.

:func:`pixel_lattice_input` turns a :class:`~pointset.data.PointSet` of pixels into the
CoC features ``[r, g, b, row, col]`` and their pixel lattice, the layout that
:class:`~pointset.nn.GridPointReducer` and :meth:`~pointset.nn.ContextCluster.lattice_plan`
take.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from pointset.data.point_set import PointSet

__all__ = ["pixel_lattice_input"]


def _pixels(points: PointSet) -> Tensor:
    pixel = points.pixel
    if pixel is None:
        pos = points.pos
        if pos is None or pos.dim() != 2 or pos.size(1) != 2:
            shape = None if pos is None else tuple(pos.shape)
            raise ValueError(
                "the points need pixel coordinates: a `pixel` attribute [N, 2] or integer "
                f"(row, col) positions (from_image(img) without normalize); got pos {shape}"
            )
        if pos.is_floating_point() and not bool((pos == pos.round()).all()):
            raise ValueError(
                "pos must hold integer (row, col) pixel coordinates (from_image(img) without "
                "normalize) when the points have no `pixel` attribute"
            )
        pixel = pos
    if pixel.dim() != 2 or pixel.size(1) != 2:
        raise ValueError(f"pixel must have shape [N, 2], got {tuple(pixel.shape)}")
    pixel = pixel.round().long() if pixel.is_floating_point() else pixel.long()
    if pixel.numel() and int(pixel.min()) < 0:
        raise ValueError(f"pixel coordinates must be >= 0, got min {int(pixel.min())}")
    return pixel


def pixel_lattice_input(
    points: PointSet, in_chans: int, image_size: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CoC features and pixel lattice of a point set of pixels.

    Args:
        points: pixels with ``x [N, in_chans]`` (or ``[N, in_chans + 2]`` ending with the
            position channels) and ``pixel [N, 2]`` or integer ``pos [N, 2]`` ``(row, col)``.
        in_chans: colour channels of the model.
        image_size: ``(H, W)`` of the source images; default ``points.grid_size`` when it
            has one row per cloud, else the largest pixel + 1 of each cloud.

    Returns:
        ``(x [N, in_chans + 2], pixel [N, 2], batch [N], size [B, 2])``: the features,
        each point's ``(row, col)``, its cloud and every cloud's image size. The position
        channels are
        ``row / (H - 1) - 0.5`` and ``col / (W - 1) - 0.5`` computed in float32 as
        :func:`~pointset.data.coc_input` does (``0`` on a side of length 1).

    Raises:
        ValueError: no pixel coordinates, pixels outside the image, a pixel listed twice,
            an empty cloud, or features with another channel count.
    """
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    x = points.x
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"points.x must be a floating [N, {in_chans}] tensor, got {shape}")
    pixel = _pixels(points).to(x.device)
    n = x.size(0)
    if pixel.size(0) != n:
        raise ValueError(f"points have {pixel.size(0)} pixel coordinates but {n} features")
    num_clouds = points.num_clouds
    batch = points.batch if points.batch is not None else pixel.new_zeros(n)
    counts = torch.bincount(batch, minlength=num_clouds)
    if bool((counts == 0).any()):
        raise ValueError(f"cloud {int((counts == 0).nonzero()[0, 0])} of the batch is empty")

    if image_size is not None:
        h, w = (int(v) for v in image_size)
        size = pixel.new_tensor([[h, w]]).expand(num_clouds, 2)
    elif points.grid_size is not None and points.grid_size.size(0) == num_clouds:
        size = points.grid_size.to(pixel.device).long()
    else:
        size = scatter(pixel, batch, 0, num_clouds, reduce="max") + 1
    if bool((size < 1).any()):
        raise ValueError(f"image sizes must be positive, got {size.tolist()}")
    outside = (pixel >= size[batch]).any(1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"pixel {pixel[i].tolist()} of cloud {int(batch[i])} lies outside its image "
            f"{size[batch[i]].tolist()}"
        )
    if x.size(1) not in (in_chans, in_chans + 2):
        raise ValueError(
            f"points.x must have {in_chans} colour channels (or {in_chans + 2} with the CoC "
            f"position channels), got {x.size(1)}"
        )
    width = int(size[:, 1].max())
    key = (batch * int(size[:, 0].max()) + pixel[:, 0]) * width + pixel[:, 1]
    if torch.unique(key).numel() != n:
        raise ValueError("a pixel appears twice in a cloud; each pixel may be one point")

    if x.size(1) == in_chans:
        extent = (size[batch] - 1).to(torch.float32)
        coords = pixel.to(torch.float32) / extent.clamp_min(1.0) - 0.5
        coords = torch.where(extent > 0, coords, torch.zeros_like(coords))
        x = torch.cat([x, coords.to(x.dtype)], dim=1)
    return x, pixel, batch, size
