"""Images <-> grid point sets, and the Context-Cluster 5-channel input.

Pixel convention used throughout: a pixel's position is ``(row, col)``, row first,
``row`` in ``0 .. H-1`` growing downwards and ``col`` in ``0 .. W-1`` growing to the right.
Points are listed in row-major order: point ``row * W + col``.

With ``normalize=True`` positions are ``row / (H - 1) - 0.5`` and ``col / (W - 1) - 0.5``,
in ``[-0.5, 0.5]``, exactly as Context Clusters builds its position channels (computed in
float32). A side of length 1 has no extent: its coordinate is ``0`` (the upstream formula
would divide by zero).

Integer images (``uint8``) become floats in ``[0, 1]`` (divided by 255); floating images
keep their values and dtype. Other dtypes are rejected.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .point_set import PointSet, batch_from_packed


def _axis(n: int, normalize: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    if not normalize:
        return torch.arange(n, device=device, dtype=dtype)
    if n == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    # float32 like the reference: arange(n) / (n - 1.0) - 0.5
    ax = torch.arange(n, device=device, dtype=torch.float32) / (n - 1.0) - 0.5
    return ax.to(dtype)


def grid_positions(
    height: int,
    width: int,
    normalize: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(row, col)`` positions of an ``H x W`` grid in row-major order: ``[H * W, 2]``."""
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1 x 1, got {height} x {width}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    rows = _axis(height, normalize, device, dtype)
    cols = _axis(width, normalize, device, dtype)
    return torch.stack(
        (rows.repeat_interleave(width), cols.repeat(height)),
        dim=1,
    )


def as_float_image(
    img: Tensor, name: str = "img", check_layout: bool = True
) -> tuple[Tensor, bool]:
    """``[B, C, H, W]`` or ``[C, H, W]`` -> (float ``[B, C, H, W]``, had_batch_dim).

    With ``check_layout``, an image that looks channels-last (last dimension 1, 3 or 4 and
    more than 4 "channels") raises ``ValueError`` instead of being read as a wide,
    3-pixel-wide grid."""
    if not isinstance(img, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4):
        raise ValueError(
            f"{name} must have shape [B, C, H, W] or [C, H, W], got {tuple(img.shape)}"
        )
    batched = img.dim() == 4
    if check_layout and img.shape[-1] in (1, 3, 4) and img.shape[-3] > 4:
        hwc = "[B, H, W, C]" if batched else "[H, W, C]"
        fix = "img.permute(0, 3, 1, 2)" if batched else "img.permute(2, 0, 1)"
        raise ValueError(
            f"{name} of shape {tuple(img.shape)} looks channels-last {hwc}; images must be "
            f"channels-first [B, C, H, W] or [C, H, W]: use {fix} (or pass "
            "check_layout=False for a feature map that really has that many channels)"
        )
    if not batched:
        img = img.unsqueeze(0)
    if min(img.shape) == 0:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(img.shape)}")
    if img.dtype == torch.uint8:
        img = img.to(torch.float32) / 255.0
    elif not img.is_floating_point():
        raise ValueError(f"{name} must be uint8 or floating, got dtype {img.dtype}")
    return img, batched


def from_image(img: Tensor, normalize: bool = False, check_layout: bool = True) -> PointSet:
    """Image(s) -> grid point set, one point per pixel.

    Args:
        img: ``[B, C, H, W]`` or ``[C, H, W]``, uint8 (scaled to ``[0, 1]``) or floating,
            on any device.
        normalize: positions in ``[-0.5, 0.5]`` (CoC convention) instead of pixel indices.
        check_layout: reject input that looks channels-last (``[H, W, 3]``: a last
            dimension of 1, 3 or 4 with more than 4 channels) with ``ValueError``; pass
            ``False`` for a feature map that really is, e.g., 64 channels on a 16x3 grid.

    Returns:
        ``PointSet`` with ``x [B*H*W, C]``, ``pos [B*H*W, 2]`` = ``(row, col)`` in
        row-major order per image and ``grid_size [B, 2]`` = ``(H, W)``. A ``[C, H, W]``
        input gives one unbatched cloud; a ``[B, C, H, W]`` input gives a PyG ``Batch``
        of ``B`` clouds (``batch`` and ``ptr`` set).
    """
    img, batched = as_float_image(img, check_layout=check_layout)
    b, c, h, w = img.shape
    x = img.permute(0, 2, 3, 1).reshape(b * h * w, c)
    pos = grid_positions(h, w, normalize, img.device, img.dtype)
    if not batched:
        return PointSet(x=x, pos=pos, grid_size=(h, w))
    grid = torch.tensor([[h, w]], dtype=torch.long, device=img.device).expand(b, 2)
    return batch_from_packed([h * w] * b, grid_size=grid, x=x, pos=pos.repeat(b, 1))


def to_image(points: PointSet, key: str = "x") -> Tensor:
    """Grid point set -> image: inverse of :func:`from_image`.

    Returns ``[C, H, W]`` for an unbatched cloud and ``[B, C, H, W]`` for a batch. Every
    cloud must be a full grid (``points.is_grid``) of the same size.
    """
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    if not points.is_grid:
        raise ValueError(
            "to_image needs a full-grid point set (grid_size recorded and matching the "
            f"cloud sizes); got grid_size={points.grid_size}"
        )
    value = points.get(key)
    if not isinstance(value, Tensor) or value.dim() != 2:
        raise ValueError(
            f"attribute {key!r} must be a [N, C] tensor, got {getattr(value, 'shape', value)}"
        )
    grid = points.grid_size
    if not bool((grid == grid[:1]).all()):
        raise ValueError(f"clouds have different grid sizes {grid.tolist()}; cannot stack")
    h, w = grid[0].tolist()
    b = grid.size(0)
    out = value.reshape(b, h, w, value.size(1)).permute(0, 3, 1, 2)
    return out if points.batch is not None else out[0]


def coc_input(img: Tensor) -> Tensor:
    """The Context-Cluster input: image channels followed by ``row`` and ``col``.

    ``row = arange(H) / (H - 1) - 0.5`` varies along H and ``col = arange(W) / (W - 1) - 0.5``
    along W (computed in float32, then cast to the image dtype); a side of length 1
    gives ``0``. For RGB this is the 5-channel ``[r, g, b, row, col]`` tensor.

    Args:
        img: ``[B, C, H, W]`` or ``[C, H, W]``; uint8 is scaled to ``[0, 1]``.

    Returns:
        ``[B, C + 2, H, W]`` (or ``[C + 2, H, W]``), same device and float dtype.
    """
    img, batched = as_float_image(img)
    b, _, h, w = img.shape
    rows = _axis(h, True, img.device, img.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = _axis(w, True, img.device, img.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    out = torch.cat((img, rows, cols), dim=1)
    return out if batched else out[0]
