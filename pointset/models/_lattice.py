"""Points on an integer pixel lattice: strided convolutions and per-cloud group norm.

The image backbones' stems and reducers are strided convolutions. On a point set whose
points sit on pixel cells (an image with some pixels removed, the valid pixels of an RGBD
frame) the same weights apply as a *sparse* convolution: an output cell sums the kernel
taps over the input points that are present; absent pixels count as zeros, exactly like
the convolution's zero padding, and only outputs near present points are kept. On a full
lattice the result is the dense convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

__all__ = ["Lattice", "cloud_group_norm", "cloud_mean", "lattice_conv"]


class Lattice(NamedTuple):
    """Integer cell coordinates of packed points.

    Attributes:
        cells: ``[N, 2]`` long ``(row, col)``.
        batch: ``[N]`` long cloud index, sorted.
        size: ``[B, 2]`` long lattice extent ``(H, W)`` of every cloud.
    """

    cells: Tensor
    batch: Tensor
    size: Tensor

    @property
    def num_clouds(self) -> int:
        return self.size.size(0)

    def is_full(self) -> bool:
        """Every cloud holds every cell of its lattice (the points of a whole image)."""
        counts = torch.bincount(self.batch, minlength=self.num_clouds)
        return bool((counts == self.size.prod(1)).all())


def _conv_extent(size: Tensor, k: int, s: int, p: int) -> Tensor:
    return torch.div(size + 2 * p - k, s, rounding_mode="floor") + 1


def lattice_conv(x: Tensor, lattice: Lattice, conv: nn.Conv2d) -> tuple[Tensor, Lattice]:
    """Apply ``conv`` (a strided ``Conv2d`` with zero padding) to points on a lattice.

    Each output sums ``W[:, :, ky, kx] @ x_j`` over the present points ``j`` at the tap
    cells ``stride * out - padding + (ky, kx)``, plus the bias: the dense convolution of
    the map that holds the points and zeros elsewhere, which is how it is computed (the
    points are scattered into a zero canvas per cloud). The output cells are the cells
    ``cell // stride`` of the input points that lie inside the convolution's output
    extent, i.e. the outputs whose stride block holds a present point, listed in row-major
    order per cloud. On a full lattice that is every output of the dense convolution.

    Shapes:
        - **input:** ``x [N, C_in]``, lattice of ``N`` points
        - **output:** ``(x' [M, C_out], lattice')``
    """
    cells, batch, size = lattice
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if isinstance(conv.padding, str):
        raise ValueError("lattice_conv needs numeric convolution padding")
    out_size = torch.stack(
        [_conv_extent(size[:, 0], kh, sh, ph), _conv_extent(size[:, 1], kw, sw, pw)], dim=1
    )
    if bool((out_size < 1).any()):
        raise ValueError(
            f"lattice {size.tolist()} is smaller than the kernel {conv.kernel_size} allows"
        )
    height, width = (int(v) for v in size.max(0).values)
    canvas = x.new_zeros(lattice.num_clouds, height, width, x.size(1))
    canvas[batch, cells[:, 0], cells[:, 1]] = x
    dense = conv(canvas.permute(0, 3, 1, 2))  # [B, C_out, H', W']

    span_h, span_w = dense.shape[-2:]
    block = torch.div(cells, cells.new_tensor([sh, sw]), rounding_mode="floor")
    inside = (block < out_size[batch]).all(1)
    keys = torch.unique((batch[inside] * span_h + block[inside, 0]) * span_w + block[inside, 1])
    out_batch = torch.div(keys, span_h * span_w, rounding_mode="floor")
    rest = keys - out_batch * span_h * span_w
    out_cells = torch.stack([rest // span_w, rest % span_w], dim=1)
    out = dense.permute(0, 2, 3, 1)[out_batch, out_cells[:, 0], out_cells[:, 1]]
    return out, Lattice(out_cells, out_batch, out_size)


def cloud_mean(x: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
    """Mean of ``x [N, C]`` over the points of each cloud: ``[B, C]``."""
    return scatter(x, batch, 0, num_clouds, reduce="mean")


def cloud_group_norm(x: Tensor, batch: Tensor, num_clouds: int, norm: nn.GroupNorm) -> Tensor:
    """``GroupNorm(1, C)`` of packed clouds: each cloud is normalised over all its points
    and channels (biased variance, ``norm.eps``), then the per-channel affine.

    On a full grid this equals ``norm`` applied to the dense ``[B, C, H, W]`` map.

    Shapes:
        - **input / output:** ``x [N, C]`` with ``batch [N]``
    """
    if norm.num_groups != 1:
        raise ValueError(f"cloud_group_norm supports one group, got {norm.num_groups}")
    count = torch.bincount(batch, minlength=num_clouds).to(x.dtype) * x.size(1)
    mean = scatter(x.sum(1), batch, 0, num_clouds, reduce="sum") / count
    centred = x - mean[batch].unsqueeze(1)
    var = scatter(centred.square().sum(1), batch, 0, num_clouds, reduce="sum") / count
    y = centred * torch.rsqrt(var + norm.eps)[batch].unsqueeze(1)
    if norm.affine:
        y = y * norm.weight + norm.bias
    return y
