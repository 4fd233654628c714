"""AutoFocusFormer cluster attention: local attention over the nearest balanced clusters."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from pointset._checks import check_points, check_positive_int
from pointset.nn._aff_geometry import (
    PAD_LOGIT,
    neighbour_dot,
    neighbour_offsets,
    neighbour_sum,
    rel_pos_features,
)
from pointset.ops import Clouds, prechecked
from pointset.ops.cluster_neighbourhood import (
    Neighbourhood,
    check_neighbourhood_sizes,
    cluster_neighbourhood,
)

__all__ = ["ClusterAttention", "Neighbourhood", "cluster_neighbourhood"]


def check_features(x: Tensor, channels: int, num_points: int, name: str = "x") -> None:
    """``x`` must be a floating ``[N, channels]`` tensor with one row per point."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape [N, {channels}], got {shape}")
    if x.size(1) != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.size(1)}")
    if x.size(0) != num_points:
        raise ValueError(f"{name} has {x.size(0)} rows but pos has {num_points} points")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")


def check_pos_dim(pos: Tensor, pos_dim: int) -> None:
    if pos.size(-1) != pos_dim:
        raise ValueError(
            f"pos must have {pos_dim} coordinates per point (the layer's pos_dim), "
            f"got {pos.size(-1)}"
        )


def packed_to_padded(
    x: Tensor, pos: Tensor, batch: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """Validate the batch of checked packed ``pos`` and pad it: ``(x [B, N, C],
    pos [B, N, D], valid [B, N], counts)``; every cloud must hold at least one point."""
    clouds = Clouds.from_batch(batch, pos.size(0), pos.device)
    counts = clouds.counts_list
    if any(n == 0 for n in counts):
        raise ValueError(
            f"cloud {counts.index(0)} of the batch is empty (points per cloud: {counts})"
        )
    return clouds.to_padded(x), clouds.to_padded(pos), clouds.valid_mask(), counts


class ClusterAttention(MessagePassing):
    r"""Cluster attention from `"AutoFocusFormer: Image Segmentation off the Grid"
    <https://arxiv.org/abs/2304.12406>`_ (Ziwen et al., CVPR 2023).

    Every token :math:`i` attends to its neighbourhood :math:`\mathcal{N}(i)`, the members of
    the ``round(nbhd_size / cluster_size)`` balanced clusters
    (:func:`pointset.ops.balanced_cluster`) whose means are nearest to it, plus one learned
    blank token :math:`(k_\varnothing, v_\varnothing)` shared by all neighbourhoods. Per head,

    .. math::
        a_{ij} = \frac{q_i^\top k_j}{\sqrt{d}} + w^\top \phi(p_j - p_i), \qquad
        a_{i\varnothing} = \frac{q_i^\top k_\varnothing}{\sqrt{d}}, \qquad
        y_i = W_o \Big( \sum_{j \in \mathcal{N}(i)} \alpha_{ij} v_j
              + \alpha_{i\varnothing} v_\varnothing \Big),

    with :math:`\alpha = \mathrm{softmax}` over :math:`\mathcal{N}(i) \cup \{\varnothing\}`,
    :math:`d` the head width and :math:`\phi(\delta) = (\delta_x, \delta_y, r, \delta_y/r,
    \delta_x/r)` the relative-position features of
    :func:`~pointset.nn._aff_geometry.rel_pos_features` mapped to one bias per head by
    ``pos_embed`` (``Linear(2 * pos_dim + 1, heads)``; in 3-D
    :math:`\phi = (\delta_x, \delta_y, \delta_z, r, \delta_z/r, \delta_y/r, \delta_x/r)`).
    The reference evaluates :math:`\phi` through a lookup table over integer offsets; the
    features here are computed directly and give the same numbers. Padding members of the
    last cluster keep a :math:`-100` logit as in the reference. A cloud with at most
    ``nbhd_size`` tokens attends globally. Parameter names follow the official
    implementation, so its checkpoints load unchanged.

    Three entry points share the parameters:

    * :meth:`forward` with ``(x, pos, batch)``: packed PyG batches of any number of
      coordinates and unequal cloud sizes; each cloud is clustered on its own.
    * :meth:`forward` with ``edge_index``: the same attention over any neighbourhood graph
      (edges ``source -> target``, the target attends), by message passing.
    * :meth:`forward_dense`: padded ``[B, N, C]`` tokens with precomputed
      :class:`Neighbourhood` (the AFF backbone reuses one per stage). Gathered keys and
      values are only ever held for a chunk of queries, in forward and backward.

    Positions receive no gradient (the features are constants of the geometry).

    Args:
        in_channels (int): token channels ``C`` (input = output).
        heads (int): attention heads; must divide ``in_channels``.
        cluster_size (int): tokens per cluster (default: 8).
        nbhd_size (int): neighbourhood size, rounded to a multiple of ``cluster_size``
            (default: 48).
        pos_dim (int): coordinates per position (default: 2).
        attn_dropout (float): dropout on the attention weights (default: 0).
        dropout (float): dropout on the output (default: 0).

    Shapes:
        - **input:** ``x [N, C]``, ``pos [N, D]``, ``batch [N]`` (optional), or
          ``edge_index [2, E]``; dense: ``x [B, N, C]``, ``pos [B, N, D]``
        - **output:** ``[N, C]``; dense: ``[B, N, C]``

    Example::

        >>> attn = ClusterAttention(32, heads=4, pos_dim=3)
        >>> x, pos = torch.randn(500, 32), torch.rand(500, 3)
        >>> attn(x, pos).shape
        torch.Size([500, 32])
    """

    def __init__(
        self,
        in_channels: int,
        heads: int,
        cluster_size: int = 8,
        nbhd_size: int = 48,
        pos_dim: int = 2,
        attn_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(aggr="add", node_dim=0)
        for name, value in (("in_channels", in_channels), ("heads", heads), ("pos_dim", pos_dim)):
            check_positive_int(value, name)
        if in_channels % heads:
            raise ValueError(f"heads={heads} must divide in_channels={in_channels}")
        check_neighbourhood_sizes(cluster_size, nbhd_size)
        self.in_channels = in_channels
        self.heads = heads
        self.cluster_size = cluster_size
        self.nbhd_size = nbhd_size
        self.pos_dim = pos_dim
        self.scale = (in_channels // heads) ** -0.5
        self.blank_k = nn.Parameter(torch.empty(in_channels))
        self.blank_v = nn.Parameter(torch.empty(in_channels))
        self.q = nn.Linear(in_channels, in_channels)
        self.kv = nn.Linear(in_channels, 2 * in_channels)
        self.pos_embed = nn.Linear(2 * pos_dim + 1, heads)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(in_channels, in_channels)
        self.proj_drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.q, self.kv, self.pos_embed, self.proj):
            lin.reset_parameters()
        nn.init.normal_(self.blank_k)
        nn.init.normal_(self.blank_v)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heads-split ``q`` (scaled), ``k``, ``v``: ``[..., H, C / H]`` each."""
        h, c = self.heads, self.in_channels // self.heads
        q = (self.q(x) * self.scale).unflatten(-1, (h, c))
        kv = self.kv(x).unflatten(-1, (h, 2, c))  # the reference's channel layout
        return q, kv[..., 0, :], kv[..., 1, :]

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        edge_index: Tensor | None = None,
        extent: Sequence[float] | None = None,
    ) -> Tensor:
        """Attention of packed tokens ``x [N, C]`` at ``pos [N, D]``.

        Without ``edge_index`` each cloud of ``batch`` is clustered on its own (``extent``:
        lattice size per coordinate, see :func:`pointset.ops.balanced_cluster`); with
        ``edge_index [2, E]`` every target attends to its sources.
        """
        check_points(pos)
        check_features(x, self.in_channels, pos.size(0))
        check_pos_dim(pos, self.pos_dim)
        if edge_index is not None:
            return self._forward_edges(x, pos, edge_index)
        xd, pd, valid, counts = packed_to_padded(x, pos, batch)
        nbhd = prechecked.cluster_neighbourhood(
            pd, self.cluster_size, self.nbhd_size, counts, extent=extent, per_cloud=True
        )
        return self.forward_dense(xd, pd, nbhd)[valid]

    def _forward_edges(self, x: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        num = x.size(0)
        q, k, v = self._qkv(x)
        src, dst = edge_index
        with torch.no_grad():
            feats = rel_pos_features((pos[src] - pos[dst]).to(x.dtype))
        logits = (q[dst] * k[src]).sum(-1) + self.pos_embed(feats)  # [E, H]
        blank = (q * self.blank_k.view(self.heads, -1)).sum(-1)  # [N, H]
        nodes = torch.arange(num, device=x.device)
        alpha = softmax(torch.cat([logits, blank]), torch.cat([dst, nodes]), num_nodes=num)
        alpha = self.attn_drop(alpha)
        alpha_e, alpha_blank = alpha[: dst.numel()], alpha[dst.numel() :]
        out = self.propagate(edge_index, v=v, alpha=alpha_e, size=(num, num))
        out = out + alpha_blank.unsqueeze(-1) * self.blank_v.view(self.heads, -1)
        return self.proj_drop(self.proj(out.reshape(num, self.in_channels)))

    def message(self, v_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * v_j

    def forward_dense(self, x: Tensor, pos: Tensor, nbhd: Neighbourhood) -> Tensor:
        """Attention of padded tokens ``x [B, N, C]`` at ``pos [B, N, D]`` over ``nbhd``
        (see :func:`cluster_neighbourhood`). Returns ``[B, N, C]``."""
        batch, num, _ = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x))  # [B, H, N, C / H]
        with torch.no_grad():
            feats = rel_pos_features(neighbour_offsets(pos.to(x.dtype), nbhd))
        bias = self.pos_embed(feats).permute(0, 3, 1, 2)  # [B, H, N, M]
        if nbhd.index is None:
            logits = torch.matmul(q, k.transpose(-1, -2))
        else:
            index = nbhd.index.expand(batch, -1, -1)
            logits = neighbour_dot(q, k, index)
        logits = logits + bias
        if nbhd.mask is not None:
            logits = logits + (~nbhd.mask).unsqueeze(1).to(logits.dtype) * PAD_LOGIT
        if nbhd.exclude is not None:
            logits = logits.masked_fill(nbhd.exclude.unsqueeze(1), float("-inf"))
        blank = (q * self.blank_k.view(self.heads, 1, -1)).sum(-1, keepdim=True)
        attn = self.attn_drop(torch.softmax(torch.cat([logits, blank], -1), -1))
        weights, blank_w = attn[..., :-1], attn[..., -1:]
        out = torch.matmul(weights, v) if nbhd.index is None else neighbour_sum(weights, v, index)
        out = out + blank_w * self.blank_v.view(self.heads, 1, -1)
        out = out.transpose(1, 2).reshape(batch, num, self.in_channels)
        return self.proj_drop(self.proj(out))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, heads={self.heads}, "
            f"cluster_size={self.cluster_size}, nbhd_size={self.nbhd_size}, "
            f"pos_dim={self.pos_dim})"
        )
