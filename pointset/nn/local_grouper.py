"""PointMLP's geometric affine grouper: FPS anchors, kNN groups, per-sample normalisation."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pointset._checks import batch_counts, check_batch, check_points, check_positive_int
from pointset.ops import fps_dense, knn_dense
from pointset.ops.prechecked import fps, knn

NORMALIZE_MODES = ("anchor", "center")


class PackedGroups(NamedTuple):
    """Output of :meth:`LocalGrouper.forward` (``M`` anchors over all clouds).

    Attributes:
        x: ``[M, k, C_out]`` grouped, normalised features followed by the anchor features.
        pos: ``[M, D]`` anchor positions.
        batch: ``[M]`` cloud of every anchor.
        anchor_index: ``[M]`` index of every anchor into the input points.
        neighbor_index: ``[M, k]`` index of every group member into the input points,
            nearest first.
    """

    x: Tensor
    pos: Tensor
    batch: Tensor
    anchor_index: Tensor
    neighbor_index: Tensor


class _DenseParts(NamedTuple):
    """Factors of dense groups (:meth:`LocalGrouper._dense_parts`); group member ``j`` of
    anchor ``a`` in cloud ``b`` is ``[alpha * centred[b, a, j] * scale[b] + beta,
    anchor[b, a]]`` with ``centred[b, a, j] = feats[b, knn_idx[b, a, j]] - reference[b, a]``
    (``[feats[b, knn_idx[b, a, j]], anchor[b, a]]`` without normalisation, where the last
    three fields are ``None``).

    Attributes:
        new_xyz: ``[B, S, D]`` anchor positions.
        knn_idx: ``[B, S, k]`` group members, indices into the ``N`` points.
        anchor: ``[B, S, C]`` anchor features.
        feats: ``[B, N, C']`` point features, followed by the positions with ``use_xyz``.
        reference: ``[B, S, C']`` what each group is centred on (anchor or group mean).
        centred: ``[B, S, k, C']`` members minus their reference.
        scale: ``[B]`` ``1 / (std + 1e-5)``, one unbiased std of ``centred`` per cloud.
    """

    new_xyz: Tensor
    knn_idx: Tensor
    anchor: Tensor
    feats: Tensor
    reference: Tensor | None
    centred: Tensor | None
    scale: Tensor | None


class LocalGrouper(nn.Module):
    r"""The local grouper with geometric affine module of PointMLP.

    From `"Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP
    Framework" <https://arxiv.org/abs/2202.07123>`_ (ICLR 2022).

    Per cloud, ``groups`` anchors are picked by farthest point sampling (first sample = the
    cloud's first point) and each anchor :math:`a` gathers its ``kneighbors`` nearest points
    :math:`\mathcal{N}(a)`. With ``normalize="anchor"`` the group features are

    .. math::
        g_{a,j} = \alpha \odot \frac{f_j - f_a}{\sigma + 10^{-5}} + \beta,
        \qquad j \in \mathcal{N}(a),

    where :math:`\sigma` is **one** unbiased standard deviation per cloud, taken over all
    groups, neighbours and channels of :math:`f_j - f_a`, and :math:`\alpha, \beta` are
    learnable per-channel affine parameters (``affine_alpha``, ``affine_beta``). With
    ``normalize="center"`` the group mean replaces :math:`f_a`; with ``normalize=None`` the
    raw :math:`f_j` are used and there are no affine parameters. The output concatenates
    :math:`g_{a,j}` with the anchor feature :math:`f_a` repeated over the group. With
    ``use_xyz=True`` the neighbour positions are appended to :math:`f_j` (and the anchor
    position to :math:`f_a`) before normalising.

    :meth:`forward` takes PyG's packed ``(x, pos, batch)`` and treats every cloud exactly
    as :meth:`forward_dense`, which follows the official layout and numbers, treats one
    sample.

    Args:
        in_channels (int): Feature channels ``C`` of the input points.
        groups (int): Anchors per cloud ``S``.
        kneighbors (int): Group size ``k`` (the anchor itself is its own nearest neighbour).
        use_xyz (bool, optional): Append positions to the grouped features.
            (default: ``False``)
        normalize (str, optional): ``"anchor"``, ``"center"`` or ``None``.
            (default: ``"anchor"``)
        pos_dim (int, optional): Coordinates per position ``D``. (default: ``3``)

    Shapes:
        - **input:** features :math:`(N, C)`, positions :math:`(N, D)`,
          batch :math:`(N)` (optional)
        - **output:** :class:`PackedGroups` with ``x`` :math:`(B S, k, C_{out})`
        - **dense input:** positions :math:`(B, N, D)`, features :math:`(B, N, C)`
        - **dense output:** anchor positions :math:`(B, S, D)`, groups
          :math:`(B, S, k, C_{out})`

        with :math:`C_{out} = 2C + D` if ``use_xyz`` else :math:`2C`.
    """

    def __init__(
        self,
        in_channels: int,
        groups: int,
        kneighbors: int,
        use_xyz: bool = False,
        normalize: str | None = "anchor",
        pos_dim: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("groups", groups),
            ("kneighbors", kneighbors),
            ("pos_dim", pos_dim),
        ):
            check_positive_int(value, name)
        if normalize is not None:
            normalize = normalize.lower()
            if normalize not in NORMALIZE_MODES:
                raise ValueError(
                    f"normalize must be one of {NORMALIZE_MODES} or None, got {normalize!r}"
                )
        self.in_channels = int(in_channels)
        self.groups = int(groups)
        self.kneighbors = int(kneighbors)
        self.use_xyz = bool(use_xyz)
        self.normalize = normalize
        self.pos_dim = int(pos_dim)
        grouped = self.in_channels + (self.pos_dim if self.use_xyz else 0)
        if normalize is not None:
            self.affine_alpha = nn.Parameter(torch.empty(1, 1, 1, grouped))
            self.affine_beta = nn.Parameter(torch.empty(1, 1, 1, grouped))
        else:
            self.register_parameter("affine_alpha", None)
            self.register_parameter("affine_beta", None)
        self.reset_parameters()

    @property
    def out_channels(self) -> int:
        """Channels of every grouped point: ``2C (+D with use_xyz)``."""
        return 2 * self.in_channels + (self.pos_dim if self.use_xyz else 0)

    def reset_parameters(self) -> None:
        """Identity affine transform (``alpha = 1``, ``beta = 0``)."""
        if self.affine_alpha is not None:
            nn.init.ones_(self.affine_alpha)
            nn.init.zeros_(self.affine_beta)

    # ------------------------------------------------------------------ dense entry
    def sample(self, xyz: Tensor) -> tuple[Tensor, Tensor]:
        """Anchors and groups of dense clouds.

        Args:
            xyz: ``[B, N, D]`` positions.

        Returns:
            ``fps_idx [B, S]`` (first sample = index 0) and ``knn_idx [B, S, k]``
            (nearest first, ties to the lower index), both indexing the ``N`` points.
        """
        self._check_dense_pos(xyz)
        fps_idx = fps_dense(xyz, self.groups)
        new_xyz = _gather(xyz, fps_idx)
        _, knn_idx = knn_dense(xyz, new_xyz, self.kneighbors)
        return fps_idx, knn_idx

    def forward_dense(self, xyz: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """Group dense clouds.

        Args:
            xyz: ``[B, N, D]`` positions; they drive sampling and grouping.
            points: ``[B, N, C]`` features.

        Returns:
            ``new_xyz [B, S, D]`` anchor positions and ``new_points [B, S, k, C_out]``.
        """
        self._check_dense_points(xyz, points)
        parts = self._dense_parts(xyz, points)
        if self.normalize is None:
            grouped = _gather(parts.feats, parts.knn_idx)  # [B, S, k, C']
        else:
            g = parts.centred * parts.scale.view(-1, 1, 1, 1)
            grouped = self.affine_alpha * g + self.affine_beta
        repeated = parts.anchor.unsqueeze(2).expand(-1, -1, self.kneighbors, -1)
        return parts.new_xyz, torch.cat([grouped, repeated], dim=-1)

    def _dense_parts(self, xyz: Tensor, points: Tensor) -> _DenseParts:
        """The factors of the dense groups (inputs checked by the caller).

        Group member ``j`` of anchor ``a`` in cloud ``b`` is
        ``[alpha * (feats[b, j] - reference[b, a]) * scale[b] + beta, anchor[b, a]]``
        (``[feats[b, j], anchor[b, a]]`` without normalisation), so a linear map of the
        groups can be applied to the ``N`` points and ``S`` anchors instead of the ``S * k``
        members.

        Returns:
            :class:`_DenseParts`.
        """
        fps_idx, knn_idx = self.sample(xyz)
        new_xyz = _gather(xyz, fps_idx)
        anchor = _gather(points, fps_idx)  # [B, S, C]
        feats = torch.cat([points, xyz], dim=-1) if self.use_xyz else points
        if self.normalize is None:
            return _DenseParts(new_xyz, knn_idx, anchor, feats, None, None, None)
        grouped = _gather(feats, knn_idx)  # [B, S, k, C']
        reference = self._reference(grouped, anchor, new_xyz)  # [B, S, 1, C']
        centred = grouped - reference
        scale = 1.0 / (torch.std(centred.reshape(centred.size(0), -1), dim=-1) + 1e-5)
        return _DenseParts(new_xyz, knn_idx, anchor, feats, reference.squeeze(-2), centred, scale)

    # ----------------------------------------------------------------- packed entry
    def forward(self, x: Tensor, pos: Tensor, batch: Tensor | None = None) -> PackedGroups:
        """Group a PyG batch of clouds of any sizes (``groups`` anchors per cloud).

        Args:
            x: ``[N, C]`` features.
            pos: ``[N, D]`` positions.
            batch: ``[N]`` cloud of every point, sorted; ``None`` means one cloud.

        Returns:
            :class:`PackedGroups`; anchors are listed cloud by cloud in batch order.
        """
        check_points(pos, "pos")
        if pos.size(1) != self.pos_dim:
            raise ValueError(f"pos must have {self.pos_dim} coordinates, got {pos.size(1)}")
        if x.dim() != 2 or x.size(0) != pos.size(0):
            raise ValueError(
                f"x must have shape [{pos.size(0)}, {self.in_channels}] (one row per point), "
                f"got {tuple(x.shape)}"
            )
        if x.size(1) != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got {x.size(1)}")
        batch = check_batch(batch, pos.size(0))
        counts = batch_counts(batch, pos.size(0)).to(pos.device)
        if bool((counts == 0).any()):
            bad = int((counts == 0).nonzero()[0, 0])
            raise ValueError(f"cloud {bad} of the batch is empty; every cloud needs points")
        smallest = int(counts.min())
        if smallest < max(self.groups, self.kneighbors):
            cloud = int(counts.argmin())
            raise ValueError(
                f"cloud {cloud} has {smallest} points but the grouper needs at least "
                f"groups={self.groups} and kneighbors={self.kneighbors}"
            )
        if batch is None:
            batch = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        num_clouds = counts.numel()

        anchor_index = fps(pos, batch, num=self.groups)
        anchor_batch = batch[anchor_index]
        edge = knn(pos, pos[anchor_index], self.kneighbors, batch, anchor_batch)
        neighbor_index = edge[1].view(-1, self.kneighbors)

        anchor = x[anchor_index]  # [M, C]
        grouped = x[neighbor_index]  # [M, k, C]
        if self.use_xyz:
            grouped = torch.cat([grouped, pos[neighbor_index]], dim=-1)
        if self.normalize is not None:
            g = grouped - self._reference(grouped, anchor, pos[anchor_index])
            std = _cloud_std(g, anchor_batch, num_clouds).view(-1, 1, 1)
            grouped = self.affine_alpha[0] * (g / (std + 1e-5)) + self.affine_beta[0]
        repeated = anchor.unsqueeze(1).expand(-1, self.kneighbors, -1)
        out = torch.cat([grouped, repeated], dim=-1)
        return PackedGroups(out, pos[anchor_index], anchor_batch, anchor_index, neighbor_index)

    # ---------------------------------------------------------------------- helpers
    def _reference(self, grouped: Tensor, anchor: Tensor, anchor_pos: Tensor) -> Tensor:
        """What each group is centred on: ``[..., 1, C']`` (group mean or anchor)."""
        if self.normalize == "center":
            return grouped.mean(dim=-2, keepdim=True)
        if self.use_xyz:
            anchor = torch.cat([anchor, anchor_pos], dim=-1)
        return anchor.unsqueeze(-2)

    def _check_dense_pos(self, xyz: Tensor) -> None:
        if not isinstance(xyz, Tensor) or xyz.dim() != 3:
            shape = tuple(xyz.shape) if isinstance(xyz, Tensor) else type(xyz).__name__
            raise ValueError(f"xyz must have shape [B, N, {self.pos_dim}], got {shape}")
        if xyz.size(-1) != self.pos_dim:
            raise ValueError(f"xyz must have {self.pos_dim} coordinates, got {xyz.size(-1)}")
        if not xyz.is_floating_point():
            raise ValueError(f"xyz must be a floating tensor, got dtype {xyz.dtype}")
        if xyz.size(0) == 0 or xyz.size(1) == 0:
            raise ValueError(f"xyz is empty (shape {tuple(xyz.shape)})")
        if xyz.size(1) < max(self.groups, self.kneighbors):
            raise ValueError(
                f"clouds have {xyz.size(1)} points but the grouper needs at least "
                f"groups={self.groups} and kneighbors={self.kneighbors}"
            )

    def _check_dense_points(self, xyz: Tensor, points: Tensor) -> None:
        self._check_dense_pos(xyz)
        if not isinstance(points, Tensor) or points.dim() != 3:
            shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
            raise ValueError(f"points must have shape [B, N, {self.in_channels}], got {shape}")
        if points.shape[:2] != xyz.shape[:2]:
            raise ValueError(
                f"points {tuple(points.shape)} and xyz {tuple(xyz.shape)} must agree in B and N"
            )
        if points.size(-1) != self.in_channels:
            raise ValueError(f"points must have {self.in_channels} channels, got {points.size(-1)}")

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, groups={self.groups}, kneighbors={self.kneighbors}, "
            f"use_xyz={self.use_xyz}, normalize={self.normalize!r}, pos_dim={self.pos_dim}"
        )


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """Rows of ``values [B, N, C]`` at ``index [B, *I]`` -> ``[B, *I, C]``."""
    flat = index.reshape(index.size(0), -1, 1).expand(-1, -1, values.size(-1))
    return torch.gather(values, 1, flat).reshape(*index.shape, values.size(-1))


def _cloud_std(g: Tensor, anchor_batch: Tensor, num_clouds: int) -> Tensor:
    """Unbiased std of ``g [M, k, C]`` per cloud (over its groups, neighbours, channels)."""
    per_anchor = g[0].numel()
    n = scatter(
        torch.full_like(anchor_batch, per_anchor, dtype=g.dtype), anchor_batch, 0, num_clouds
    )
    mean = scatter(g.sum(dim=(1, 2)), anchor_batch, 0, num_clouds) / n
    sq = ((g - mean[anchor_batch].view(-1, 1, 1)) ** 2).sum(dim=(1, 2))
    var = scatter(sq, anchor_batch, 0, num_clouds) / (n - 1)
    return var.sqrt()[anchor_batch]
