"""Group-wise Context Cluster of PointMLP-CoC: one cluster per kNN group, centred on its mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pointset._checks import check_positive_int

from ._row_product import linear_rows


class GroupContextCluster(nn.Module):
    r"""The Context Cluster block of PointMLP-CoC, one cluster per point group.

    From `"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_ (ICLR 2023), point
    cloud variant. Every group (a kNN neighbourhood of PointMLP) is a single cluster whose
    center is the mean of its members, so no assignment step is needed. With
    :math:`f_i = W_1 x_i`, :math:`v_i = W_v x_i` (split into ``heads``) for the members
    :math:`i` of a group,

    .. math::
        c = \tfrac{1}{k}\textstyle\sum_i f_i,\quad v_c = \tfrac{1}{k}\sum_i v_i,\quad
        s_i = \sigma\big(\beta + \alpha \cos(c, f_i)\big),

        g = \frac{\sum_i s_i v_i + v_c}{\sum_i s_i + 1},\qquad
        y_i = x_i + W_2\,(s_i\, g).

    ``alpha`` and ``beta`` are the learnable scalars ``sim_alpha`` and ``sim_beta``;
    ``W_1``, ``W_v``, ``W_2`` are the linear layers ``fc1``, ``fc_v``, ``fc2`` (with biases).

    :meth:`forward` takes packed points whose ``batch`` vector is the group index (any
    group sizes) and computes the formula with scatter reductions; the whole cluster is one
    group, so no message-passing edges are involved. :meth:`forward_dense` takes groups of
    equal size in the channel-first layout of PointMLP.

    Args:
        in_channels (int): Channels of the points.
        heads (int, optional): Heads; the similarity is computed per head. (default: ``1``)
        head_dim (int, optional): Channels per head; ``None`` takes ``max(in_channels // 4, 32)``
            as PointMLP-CoC does. (default: ``None``)

    Shapes:
        - **input:** points :math:`(N, C)`, ``pos`` (unused), ``batch`` (the group of every
          point) :math:`(N)` -> **output:** :math:`(N, C)`
        - **dense input:** :math:`(G, C, k)` -> **output:** :math:`(G, C, k)`
    """

    def __init__(self, in_channels: int, heads: int = 1, head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            head_dim = max(in_channels // 4, 32)
        for name, value in (("in_channels", in_channels), ("heads", heads), ("head_dim", head_dim)):
            check_positive_int(value, name)
        self.in_channels = in_channels
        self.heads = heads
        self.head_dim = head_dim
        self.fc1 = nn.Linear(in_channels, heads * head_dim)
        self.fc2 = nn.Linear(heads * head_dim, in_channels)
        self.fc_v = nn.Linear(in_channels, heads * head_dim)
        self.sim_alpha = nn.Parameter(torch.empty(1))
        self.sim_beta = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default ``Linear`` init, ``sim_alpha = 1``, ``sim_beta = 0``."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        self.fc_v.reset_parameters()
        nn.init.ones_(self.sim_alpha)
        nn.init.zeros_(self.sim_beta)

    def _similarity(self, center: Tensor, feats: Tensor) -> Tensor:
        """``sigmoid(beta + alpha * cos)`` along the last axis (broadcasting)."""
        cos = (F.normalize(center, dim=-1) * F.normalize(feats, dim=-1)).sum(dim=-1)
        return torch.sigmoid(self.sim_beta + self.sim_alpha * cos)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Cluster each of ``G`` groups of ``k`` points.

        Args:
            x: ``[G, C, k]`` group members, channel first.

        Returns:
            ``[G, C, k]``.
        """
        if x.dim() != 3 or x.size(1) != self.in_channels:
            raise ValueError(f"x must have shape [G, {self.in_channels}, k], got {tuple(x.shape)}")
        if x.size(0) == 0 or x.size(2) == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)} (no groups or no members)")
        return self.forward_tokens(x.transpose(1, 2)).transpose(1, 2)

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """Cluster each of ``G`` groups of ``k`` points, channels last.

        Args:
            tokens: ``[G, k, C]`` group members.

        Returns:
            ``[G, k, C]``.
        """
        g, k, _ = tokens.shape
        h, d = self.heads, self.head_dim
        # fc1 and fc_v in one product; the sums over the k members as batched products, so
        # no normalised copy of the features and no weighted copy of the values is built
        weight = torch.cat([self.fc1.weight, self.fc_v.weight])
        bias = torch.cat([self.fc1.bias, self.fc_v.bias])
        feats, value = linear_rows(tokens, weight, bias).view(g, k, 2, h, d).unbind(2)
        center = F.normalize(feats.mean(dim=1), dim=-1)  # [G, H, d]
        norm = torch.linalg.vector_norm(feats, dim=-1).clamp_min(1e-12)  # [G, k, H]
        cos = torch.einsum("gkhd,ghd->gkh", feats, center) / norm
        sim = torch.sigmoid(self.sim_beta + self.sim_alpha * cos)  # [G, k, H]
        agg = (torch.einsum("gkhd,gkh->ghd", value, sim) + value.mean(dim=1)) / (
            sim.sum(dim=1).unsqueeze(-1) + 1.0
        )  # [G, H, d]
        out = (agg.unsqueeze(1) * sim.unsqueeze(-1)).reshape(g, k, h * d)
        return tokens + self.fc2(out)

    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        num_groups: int | None = None,
    ) -> Tensor:
        """Cluster packed points, each group being one cluster.

        Args:
            x: ``[N, C]`` points.
            pos: not used (the groups carry the geometry).
            batch: ``[N]`` group of every point (any order, any sizes); ``None``: one group.
            num_groups: number of groups (default ``batch.max() + 1``).

        Returns:
            ``[N, C]``.
        """
        group = batch if batch is not None else x.new_zeros(x.size(0), dtype=torch.long)
        if x.dim() != 2 or x.size(1) != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}], got {tuple(x.shape)}")
        if x.size(0) == 0:
            raise ValueError("x is empty (0 points)")
        if group.dim() != 1 or group.numel() != x.size(0) or group.is_floating_point():
            raise ValueError(
                f"batch (the group of every point) must be an integer tensor of shape [{x.size(0)}], got "
                f"{tuple(group.shape)} {group.dtype}"
            )
        lo, hi = int(group.min()), int(group.max())
        if lo < 0 or (num_groups is not None and hi >= num_groups):
            raise ValueError(
                f"group ids (batch) span [{lo}, {hi}], outside [0, num_groups={num_groups})"
                if num_groups is not None
                else f"group ids (batch) must be >= 0, got {lo}"
            )
        n = x.size(0)
        feats = self.fc1(x).view(n, self.heads, self.head_dim)
        value = self.fc_v(x).view(n, self.heads, self.head_dim)
        center = scatter(feats, group, 0, num_groups, reduce="mean")  # [G, H, d]
        value_center = scatter(value, group, 0, num_groups, reduce="mean")
        sim = self._similarity(center[group], feats).unsqueeze(-1)  # [N, H, 1]
        num = scatter(value * sim, group, 0, num_groups) + value_center
        den = scatter(sim, group, 0, num_groups) + 1.0
        out = (num / den)[group] * sim
        return x + self.fc2(out.reshape(n, self.heads * self.head_dim))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, heads={self.heads}, head_dim={self.head_dim}"
