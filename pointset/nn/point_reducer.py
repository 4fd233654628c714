"""Point reducers of Context Clusters: fewer points, each fusing a neighbourhood."""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor, nn

from pointset._checks import batch_counts, check_batch, check_int, check_points, check_positive_int
from pointset.nn.cluster_plan import grid_runs
from pointset.ops import fps, knn

__all__ = ["GridPointReducer", "PointReducer"]

_Pair = Union[int, Tuple[int, int]]


class PointReducer(nn.Module):
    r"""The point reducer of `"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_
    (Ma et al., ICLR 2023) for general point sets.

    Anchors are farthest-point samples of each cloud. Each anchor :math:`a` fuses its ``k``
    nearest points :math:`j_1, \dots, j_k` of the same cloud (ascending distance, the anchor
    itself first) by concatenating their features, each followed by its position relative to
    the anchor, and projecting linearly:

    .. math::
        x'_a = W \big[\, x_{j_1} \Vert (p_{j_1} - p_a) \Vert \cdots \Vert
        x_{j_k} \Vert (p_{j_k} - p_a) \big] + b .

    The relative positions make the result depend on the neighbourhood's geometry, which the
    feature-only concatenation of the paper gets implicitly from the image layout (on images
    the positions are input channels). Set ``pos_dim=0`` to leave them out. The new points sit
    at the anchors.

    Args:
        in_channels (int): input feature channels ``C``.
        out_channels (int): output channels.
        k (int): points fused per anchor (default: 4; the paper uses 4 or 9).
        ratio (float, optional): anchors as a fraction of each cloud, ``ceil(ratio * n)``
            (default: 0.25 when ``num`` is not given).
        num (int, optional): anchors per cloud instead of ``ratio``.
        pos_dim (int): coordinates per point ``D`` whose relative positions are concatenated
            (default: 3; 0 disables them).
        bias (bool): learn an additive bias (default: ``True``).

    Shapes:
        - **input:** ``x [N, C]``, ``pos [N, D]``, ``batch [N]`` (optional),
          ``anchors [M]`` (optional indices into the points)
        - **output:** ``(x' [M, out_channels], pos' [M, D], batch' [M] or None)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        k: int = 4,
        ratio: float | None = None,
        num: int | None = None,
        pos_dim: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("k", k)):
            check_positive_int(value, name)
        check_int(pos_dim, "pos_dim", minimum=0)
        if ratio is not None and num is not None:
            raise ValueError("give ratio or num, not both")
        if ratio is None and num is None:
            ratio = 0.25
        if ratio is not None and not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
        if num is not None:
            check_positive_int(num, "num")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.k, self.ratio, self.num, self.pos_dim = k, ratio, num, pos_dim
        self.proj = nn.Linear(k * (in_channels + pos_dim), out_channels, bias=bias)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> Tuple[Tensor, Tensor, Tensor | None]:
        """Reduce ``(x, pos, batch)`` to the anchors; see the class docstring for shapes."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [N, {self.in_channels}], got {shape}")
        check_points(pos, "pos")
        if pos.size(0) != x.size(0):
            raise ValueError(f"pos has {pos.size(0)} points but x has {x.size(0)}")
        if self.pos_dim and pos.size(1) != self.pos_dim:
            raise ValueError(
                f"pos has {pos.size(1)} coordinates per point, the layer was built with "
                f"pos_dim={self.pos_dim}"
            )
        n = x.size(0)
        batch = check_batch(batch, n)
        counts = batch_counts(batch, n)
        if bool((counts == 0).any()):
            bad = int((counts == 0).nonzero()[0, 0])
            raise ValueError(f"cloud {bad} of the batch is empty; every cloud needs points")
        if bool((counts < self.k).any()):
            bad = int((counts < self.k).nonzero()[0, 0])
            raise ValueError(f"cloud {bad} has {int(counts[bad])} points, fewer than k={self.k}")
        if anchors is None:
            if self.num is not None and int(counts.min()) < self.num:
                bad = int((counts < self.num).nonzero()[0, 0])
                raise ValueError(
                    f"cloud {bad} has {int(counts[bad])} points, fewer than num={self.num}"
                )
            anchors = fps(pos, batch, ratio=self.ratio, num=self.num)
        anchor_pos = pos[anchors]
        anchor_batch = None if batch is None else batch[anchors]

        edge = knn(pos, anchor_pos, self.k, batch, anchor_batch)  # row 0 anchor, row 1 point
        order = torch.argsort(edge[0], stable=True)
        nbr = edge[1][order].view(-1, self.k)  # [M, k], ascending distance
        fused = x[nbr]
        if self.pos_dim:
            fused = torch.cat([fused, pos[nbr] - anchor_pos.unsqueeze(1)], dim=-1)
        out = self.proj(fused.reshape(nbr.size(0), -1))
        return out, anchor_pos, anchor_batch

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, k={self.k}, "
            f"ratio={self.ratio}, num={self.num}, pos_dim={self.pos_dim})"
        )


class GridPointReducer(nn.Module):
    r"""The point reducer of Context Clusters on a regular grid: a strided convolution.

    On a row-major grid the reducer's "concatenate the neighbours of evenly spaced anchors
    and project" is exactly a convolution with ``stride`` spacing of anchors and a
    ``patch_size`` window (`"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_).
    The official models use ``GridPointReducer(5, C0, 4, 4, 0)`` as stem and
    ``GridPointReducer(C_i, C_{i+1}, 3, 2, 1)`` between stages; the parameters are named
    ``proj`` as in the official checkpoints.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        patch_size (int or tuple): window size (default: 3).
        stride (int or tuple): anchor spacing (default: 2).
        padding (int or tuple): zero padding (default: 1).

    Shapes:
        - **input:** ``x [B, C, H, W]``; or packed ``x [N, C]`` (row-major per image) with
          ``grid_size`` ``(H, W)`` or ``[B, 2]`` (the :class:`~pointset.data.PointSet` record)
        - **output:** ``[B, out_channels, H', W']``; or ``(x' [N', out_channels],
          grid_size' [B, 2])`` for packed input
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
        self.in_channels, self.out_channels = in_channels, out_channels
        self.proj = nn.Conv2d(
            in_channels, out_channels, kernel_size=patch_size, stride=stride, padding=padding
        )

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def forward(
        self, x: Tensor, grid_size: Union[Tuple[int, int], Tensor] | None = None
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Reduce ``x``; see the class docstring for shapes."""
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 4 and grid_size is None:
            if x.size(1) != self.in_channels:
                raise ValueError(
                    f"x has {x.size(1)} channels (shape {tuple(x.shape)}), "
                    f"expected {self.in_channels}"
                )
            if min(x.shape) == 0:
                raise ValueError(f"x is empty: shape {tuple(x.shape)}")
            return self.proj(x)
        if x.dim() != 2 or grid_size is None:
            raise ValueError(
                f"x must be [B, C, H, W], or [N, C] with grid_size; got shape "
                f"{tuple(x.shape)} and grid_size={grid_size}"
            )
        n, c = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"x has {c} channels (shape {tuple(x.shape)}), expected {self.in_channels}"
            )
        if n == 0:
            raise ValueError("x is empty (0 points)")
        outs, sizes = [], []
        for (h, w), part in grid_runs(grid_size, x):
            out = self.proj(part.view(-1, h, w, c).permute(0, 3, 1, 2))
            sizes += [(out.size(2), out.size(3))] * out.size(0)
            outs.append(out.permute(0, 2, 3, 1).reshape(-1, self.out_channels))
        return torch.cat(outs), torch.tensor(sizes, dtype=torch.long, device=x.device)

    def __repr__(self) -> str:
        p = self.proj
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"patch_size={p.kernel_size}, stride={p.stride}, padding={p.padding})"
        )
