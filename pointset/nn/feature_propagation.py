"""PointNet++ feature propagation as used by PointMLP's part-segmentation decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pointset._checks import check_positive_int
from pointset.ops import knn, knn_dense

from .point_mlp_blocks import ConvBNReLU1D, PosExtraction, check_channel_first


def interpolate_dense(
    xyz: Tensor, xyz_coarse: Tensor, x_coarse: Tensor, k: int = 3, eps: float = 1e-8
) -> Tensor:
    r"""Inverse squared distance interpolation from ``k`` nearest coarse points.

    .. math::
        f_i = \sum_{j \in \mathcal{N}_k(i)} \frac{w_{ij}}{\sum_{l \in \mathcal{N}_k(i)} w_{il}}
        f_j, \qquad w_{ij} = \frac{1}{\lVert p_i - q_j \rVert^2 + \epsilon}

    The neighbours come from :func:`~pointset.ops.knn_dense` (exact, ties to the lower
    index); the squared distances are recomputed from coordinate differences, so a fine
    point that coincides with a coarse point gets weight :math:`1/\epsilon`. With fewer
    than ``k`` coarse points all of them are used (one coarse point is copied to every
    fine point).

    Args:
        xyz: ``[B, N, D]`` positions to interpolate at.
        xyz_coarse: ``[B, S, D]`` positions of the known features.
        x_coarse: ``[B, C, S]`` known features (channels first).
        k: neighbours per point. (default: ``3``)
        eps: added to every squared distance. (default: ``1e-8``)

    Returns:
        ``[B, C, N]`` interpolated features.
    """
    if xyz_coarse.dim() != 3 or x_coarse.dim() != 3 or x_coarse.size(2) != xyz_coarse.size(1):
        raise ValueError(
            f"x_coarse [B, C, S] must match xyz_coarse [B, S, D], got {tuple(x_coarse.shape)} "
            f"and {tuple(xyz_coarse.shape)}"
        )
    k = min(int(k), xyz_coarse.size(1))
    _, idx = knn_dense(xyz_coarse, xyz, k)  # [B, N, k]
    b, n, _ = idx.shape
    flat = idx.reshape(b, n * k)
    neighbours = torch.gather(xyz_coarse, 1, flat.unsqueeze(-1).expand(-1, -1, xyz.size(-1)))
    dist2 = ((xyz.unsqueeze(2) - neighbours.view(b, n, k, -1)) ** 2).sum(-1)  # [B, N, k]
    weight = 1.0 / (dist2 + eps)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    gathered = torch.gather(x_coarse, 2, flat.unsqueeze(1).expand(-1, x_coarse.size(1), -1))
    return (gathered.view(b, -1, n, k) * weight.unsqueeze(1)).sum(-1)


def interpolate_packed(
    pos: Tensor,
    pos_coarse: Tensor,
    x_coarse: Tensor,
    batch: Tensor | None = None,
    batch_coarse: Tensor | None = None,
    k: int = 3,
    eps: float = 1e-8,
) -> Tensor:
    r""":func:`interpolate_dense` for a PyG batch of clouds of any sizes.

    Neighbours come from :func:`~pointset.ops.knn` within each cloud. ``k`` is capped at
    the smallest coarse cloud, so a cloud gives the dense result when every coarse cloud
    has at least ``k`` points.

    Args:
        pos: ``[N, D]`` positions to interpolate at.
        pos_coarse: ``[S, D]`` positions of the known features.
        x_coarse: ``[S, C]`` known features.
        batch, batch_coarse: ``[N]`` / ``[S]`` sorted cloud index, or ``None`` (one cloud).
        k: neighbours per point. (default: ``3``)
        eps: added to every squared distance. (default: ``1e-8``)

    Returns:
        ``[N, C]`` interpolated features.
    """
    for name, p in (("pos", pos), ("pos_coarse", pos_coarse)):
        if not isinstance(p, Tensor) or p.dim() != 2:
            shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"{name} must have shape [N, D], got {shape}")
        if p.size(0) == 0:
            raise ValueError(f"{name} is empty (shape {tuple(p.shape)})")
    if pos.size(1) != pos_coarse.size(1):
        raise ValueError(
            f"pos and pos_coarse must have the same coordinates, got {pos.size(1)} and "
            f"{pos_coarse.size(1)}"
        )
    for name, b, p in (("batch", batch, pos), ("batch_coarse", batch_coarse, pos_coarse)):
        if b is not None:
            if b.shape != p.shape[:1]:
                raise ValueError(f"{name} must have shape [{p.size(0)}], got {tuple(b.shape)}")
            counts = torch.bincount(b)
            if bool((counts == 0).any()):
                cloud = int((counts == 0).nonzero()[0, 0])
                raise ValueError(f"cloud {cloud} of {name} is empty; every cloud needs points")
    if x_coarse.dim() != 2 or x_coarse.size(0) != pos_coarse.size(0):
        raise ValueError(
            f"x_coarse [S, C] must match pos_coarse [S, D], got {tuple(x_coarse.shape)} and "
            f"{tuple(pos_coarse.shape)}"
        )
    smallest = pos_coarse.size(0) if batch_coarse is None else int(batch_coarse.bincount().min())
    k = max(1, min(int(k), smallest))  # an empty coarse cloud is reported by knn
    row, col = knn(pos_coarse, pos, k, batch_coarse, batch)
    weight = 1.0 / (((pos[row] - pos_coarse[col]) ** 2).sum(-1) + eps)
    weight = weight / scatter(weight, row, 0, pos.size(0), reduce="sum")[row]
    return scatter(x_coarse[col] * weight.unsqueeze(-1), row, 0, pos.size(0), reduce="sum")


class FeaturePropagation(nn.Module):
    r"""One decoder step of PointMLP part segmentation (PointNet++ feature propagation).

    From `"PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric Space"
    <https://arxiv.org/abs/1706.02413>`_ (NeurIPS 2017), in the form of
    `"Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP
    Framework" <https://arxiv.org/abs/2202.07123>`_ (ICLR 2022). Coarse features are
    interpolated to the fine points (:func:`interpolate_dense`, 3 neighbours), concatenated
    after the fine level's skip features and fused:

    .. math::
        y = \Phi_{pos}\big(\mathrm{ReLU}(\mathrm{BN}(W [x_{skip} \,\|\, \mathrm{interp}(x)]))\big)

    ``fuse`` is a :class:`~pointset.nn.ConvBNReLU1D` that always uses ReLU (as the official
    code, which does not pass its ``activation`` on), ``extraction`` a
    :class:`~pointset.nn.PosExtraction` with ``blocks`` residual blocks.

    Args:
        in_channels (int): Skip plus coarse channels.
        out_channels (int): Output channels.
        blocks (int, optional): Residual blocks after the fusion. (default: ``1``)
        groups (int, optional): Convolution groups of the blocks. (default: ``1``)
        res_expansion (float, optional): Hidden width factor of the blocks. (default: ``1.0``)
        bias (bool, optional): Convolution biases. (default: ``True``)
        activation (str, optional): Activation of the blocks. (default: ``"relu"``)
        k (int, optional): Interpolation neighbours. (default: ``3``)

    Shapes:
        - **input:** skip features ``x`` :math:`(N, C_{skip})` or ``None``, positions
          :math:`(N, D)`, batch :math:`(N)`; keywords ``x_coarse`` :math:`(S, C)`,
          ``pos_coarse`` :math:`(S, D)`, ``batch_coarse`` :math:`(S)`, with
          :math:`C_{skip} + C = C_{in}`
        - **output:** :math:`(N, C_{out})`
        - **dense input** (:meth:`forward_dense`): fine positions :math:`(B, N, D)`, coarse
          positions :math:`(B, S, D)`, skip features :math:`(B, C_{skip}, N)` or ``None``,
          coarse features :math:`(B, C, S)`
        - **dense output:** :math:`(B, C_{out}, N)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int = 1,
        groups: int = 1,
        res_expansion: float = 1.0,
        bias: bool = True,
        activation: str = "relu",
        k: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("k", k)):
            check_positive_int(value, name)
        self.in_channels, self.out_channels, self.k = in_channels, out_channels, int(k)
        self.fuse = ConvBNReLU1D(in_channels, out_channels, 1, bias=bias, activation="relu")
        self.extraction = PosExtraction(
            out_channels,
            blocks,
            groups=groups,
            res_expansion=res_expansion,
            bias=bias,
            activation=activation,
        )

    def reset_parameters(self) -> None:
        self.fuse.reset_parameters()
        self.extraction.reset_parameters()

    def forward_dense(
        self, xyz: Tensor, xyz_coarse: Tensor, x_skip: Tensor | None, x_coarse: Tensor
    ) -> Tensor:
        """The official layout (see the class docstring): ``[B, C_out, N]``."""
        x = interpolate_dense(xyz, xyz_coarse, x_coarse, self.k)  # [B, C, N]
        if x_skip is not None:
            check_channel_first(x_skip, self.in_channels - x.size(1), type(self).__name__)
            x = torch.cat([x_skip, x], dim=1)
        return self.extraction.forward_dense(self.fuse.forward_dense(x))

    def forward(
        self,
        x: Tensor | None,
        pos: Tensor,
        batch: Tensor | None = None,
        *,
        x_coarse: Tensor,
        pos_coarse: Tensor,
        batch_coarse: Tensor | None = None,
    ) -> Tensor:
        """The step on PyG batches: skip features ``x [N, C_skip]`` (or ``None``) at
        ``pos [N, D]``, coarse features ``x_coarse [S, C]`` at ``pos_coarse [S, D]``.
        Batch statistics run over every point of every cloud. Returns ``[N, C_out]``."""
        x_skip = x
        x = interpolate_packed(pos, pos_coarse, x_coarse, batch, batch_coarse, self.k)
        if x_skip is not None:
            channels = self.in_channels - x.size(1)
            if x_skip.dim() != 2 or x_skip.shape != (pos.size(0), channels):
                raise ValueError(
                    f"x_skip must have shape [{pos.size(0)}, {channels}] (one row of "
                    f"{channels} channels per point), got {tuple(x_skip.shape)}"
                )
            x = torch.cat([x_skip, x], dim=1)
        return self.extraction(self.fuse(x))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, k={self.k}"
