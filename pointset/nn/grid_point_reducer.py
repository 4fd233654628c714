"""The grid point reducer of Context Clusters: a strided convolution, dense or sparse."""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor, nn

from pointset._checks import check_positive_int
from pointset.nn._lattice import check_lattice, full_lattice

__all__ = ["GridPointReducer"]

_Pair = Union[int, Tuple[int, int]]


class GridPointReducer(nn.Module):
    r"""The point reducer of Context Clusters on a pixel lattice: a strided convolution.

    On a row-major grid the reducer's "concatenate the neighbours of evenly spaced anchors
    and project" is exactly a convolution with ``stride`` spacing of anchors and a
    ``patch_size`` window (`"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_).
    The official models use ``GridPointReducer(5, C0, 4, 4, 0)`` as stem and
    ``GridPointReducer(C_i, C_{i+1}, 3, 2, 1)`` between stages; the parameters are named
    ``proj`` as in the official checkpoints.

    :meth:`forward` takes points on integer ``(row, col)`` cells, e.g. an image with some
    pixels removed or the valid pixels of an RGBD frame, and applies the same weights as a
    *sparse* convolution:

    .. math::
        y_o = b + \sum_{(k_y, k_x)} \sum_{j:\, c_j = s\,o - p + (k_y, k_x)} W_{:, :, k_y, k_x}\, x_j

    over the present points :math:`j` at the tap cells of output cell :math:`o` (stride
    :math:`s`, padding :math:`p`): absent cells count as zeros, like the convolution's zero
    padding. The outputs kept are the cells ``cell // stride`` of the input points that lie
    inside the convolution's output extent, in row-major order per cloud; on a whole image
    that is every output of the dense convolution, so the result equals
    :meth:`forward_dense`.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        patch_size (int or tuple): window size (default: 3).
        stride (int or tuple): anchor spacing (default: 2).
        padding (int or tuple): zero padding (default: 1).

    Shapes:
        - **input:** ``x [N, in_channels]``, ``pos [N, 2]`` integer ``(row, col)`` cells,
          ``batch [N]`` (optional), ``size`` ``(H, W)`` or ``[B, 2]`` lattice extents
          (optional: largest cell + 1 per cloud). With ``pos=None``, ``size`` is a grid
          record (``PointSet.grid_size``) and the points are whole row-major grids.
        - **output:** ``(x' [M, out_channels], pos' [M, 2] long, batch' [M], size' [B, 2])``
        - **dense input:** ``x [B, in_channels, H, W]`` -> ``[B, out_channels, H', W']``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        patch_size: _Pair = 3,
        stride: _Pair = 2,
        padding: _Pair = 1,
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        if isinstance(padding, str):
            raise ValueError(
                f"padding must be numeric (the lattice path needs it), got {padding!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.proj = nn.Conv2d(
            in_channels, out_channels, kernel_size=patch_size, stride=stride, padding=padding
        )

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        size: Union[Tuple[int, int], Tensor] | None = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Reduce points on a lattice (see the class docstring)."""
        self._check_features(x, 2)
        if pos is None:
            if size is None:
                raise ValueError("give pos (lattice cells) or size (a grid record)")
            if batch is not None:
                raise ValueError("without pos the grid record sets the clouds; drop batch")
            cells, batch, size = full_lattice(size, x.size(0), x.device)
        else:
            cells, batch, size = check_lattice(pos, batch, size, x.size(0))
        (kh, kw), (sh, sw), (ph, pw) = self.proj.kernel_size, self.proj.stride, self.proj.padding
        out_size = torch.stack(
            [_extent(size[:, 0], kh, sh, ph), _extent(size[:, 1], kw, sw, pw)], dim=1
        )
        if bool((out_size < 1).any()):
            raise ValueError(
                f"lattice {size.tolist()} is smaller than the kernel {self.proj.kernel_size} allows"
            )
        height, width = (int(v) for v in size.max(0).values)
        canvas = x.new_zeros(size.size(0), height, width, x.size(1))
        canvas[batch, cells[:, 0], cells[:, 1]] = x
        dense = self.proj(canvas.permute(0, 3, 1, 2))  # [B, C_out, H', W']

        span_h, span_w = dense.shape[-2:]
        block = torch.div(cells, cells.new_tensor([sh, sw]), rounding_mode="floor")
        inside = (block < out_size[batch]).all(1)
        keys = torch.unique((batch[inside] * span_h + block[inside, 0]) * span_w + block[inside, 1])
        out_batch = torch.div(keys, span_h * span_w, rounding_mode="floor")
        rest = keys - out_batch * span_h * span_w
        out_cells = torch.stack([rest // span_w, rest % span_w], dim=1)
        out = dense.permute(0, 2, 3, 1)[out_batch, out_cells[:, 0], out_cells[:, 1]]
        return out, out_cells, out_batch, out_size

    def forward_dense(self, x: Tensor) -> Tensor:
        """The official layout: ``x [B, in_channels, H, W]`` -> ``[B, out_channels, H', W']``."""
        self._check_features(x, 4)
        if min(x.shape) == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)}")
        return self.proj(x)

    def _check_features(self, x: Tensor, dims: int) -> None:
        layout = "packed points [N, C]" if dims == 2 else "a feature map [B, C, H, W]"
        if not isinstance(x, Tensor) or x.dim() != dims:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be {layout}, got shape {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got dtype {x.dtype}")
        if x.size(1) != self.in_channels:
            raise ValueError(
                f"x has {x.size(1)} channels (shape {tuple(x.shape)}), expected {self.in_channels}"
            )

    def __repr__(self) -> str:
        p = self.proj
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"patch_size={p.kernel_size}, stride={p.stride}, padding={p.padding})"
        )


def _extent(size: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    """Output length of a convolution along one axis, per cloud."""
    return torch.div(size + 2 * padding - kernel, stride, rounding_mode="floor") + 1
