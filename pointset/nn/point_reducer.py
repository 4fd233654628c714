"""The point reducer of Context Clusters: fewer points, each fusing a neighbourhood."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from pointset._checks import batch_counts, check_batch, check_int, check_points, check_positive_int
from pointset.ops.prechecked import fps, knn

__all__ = ["PointReducer"]


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
