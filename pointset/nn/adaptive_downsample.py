"""AutoFocusFormer adaptive downsampling: learned importance + grid prior, then merging."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from pointset._checks import check_points, check_positive_int
from pointset.nn._aff_geometry import (
    neighbour_sum,
    rel_pos_features,
)
from pointset.nn.cluster_attention import check_features, check_pos_dim, packed_to_padded
from pointset.ops import prechecked
from pointset.ops.cluster_neighbourhood import (
    Neighbourhood,
    check_neighbourhood_sizes,
    expand_global,
    gather_tokens,
    nearest_other_distance,
)

__all__ = ["AdaptiveDownsample", "Downsampled"]

#: Score offset of reserved tokens, which are appended rather than ranked (reference value).
RESERVE_SCORE = -100.0


class Downsampled(NamedTuple):
    """Padded output of :meth:`AdaptiveDownsample.forward_dense`.

    Attributes:
        x: ``[B, K, C_out]`` merged features.
        pos: ``[B, K, D]`` positions of the kept tokens.
        index: ``[B, K]`` indices of the kept tokens into the input (sampled ones by
            descending score, then the reserved ones in index order).
        counts: tokens kept per cloud; rows beyond ``counts[b]`` are padding.
    """

    x: Tensor
    pos: Tensor
    index: Tensor
    counts: list


class AdaptiveDownsample(nn.Module):
    r"""Adaptive downsampling (``ClusterMerging``) from `"AutoFocusFormer: Image Segmentation
    off the Grid" <https://arxiv.org/abs/2304.12406>`_ (Ziwen et al., CVPR 2023), Sec. 3.3.

    Every token gets a learned importance :math:`s_i = \sigma(w_s^\top x_i + b_s)` and a grid
    prior :math:`g_i \in \{0, 1\}`. Per cloud of ``n`` tokens exactly ``int(n * ratio)`` are
    kept: all *reserved* tokens (every coordinate a multiple of ``2 * stride``; they keep the
    coarse grid connected) plus the best remaining ones by :math:`g_i + \alpha s_i` (the score
    is detached for this choice). The prior marks tokens whose coordinates are all multiples
    of ``stride`` (``adaptive_prior=False``, AFF's first stage) or of the local stride
    :math:`t_i = 2^{\lceil \log_2 d_i \rceil + 1}` from the distance :math:`d_i` to the
    nearest other token (later stages). Each kept token :math:`c` merges its neighbourhood
    (that of :class:`ClusterAttention`) PointConv-style,

    .. math::
        y_c = W \, \mathrm{LN}\Big( \big\Vert_{o=1}^{4} \sum_{j \in \mathcal{N}(c)}
              \mathrm{GELU}(\mathrm{LN}(U \phi(p_j - p_c)))_o \; s_j \; m_j \; x_j \Big),

    with :math:`\phi` the relative-position features of :class:`ClusterAttention`,
    :math:`m_j` zero for cluster padding, the 4 weight channels outermost in the
    concatenation, and :math:`s_j` **not** detached, so the task loss trains the importance
    head through the merge. Parameter names follow the official implementation.

    The prior reads positions as lattice coordinates (integer token positions, as for image
    tokens). On clouds with arbitrary real coordinates it rarely fires, and the learned score
    drives the choice; scale positions to lattice units to use it.

    Args:
        in_channels (int): input channels ``C``.
        out_channels (int): output channels.
        pos_dim (int): coordinates per position (default: 2).
        ratio (float): fraction of tokens kept, ``int(n * ratio)`` per cloud (default: 0.25).
        alpha (float): weight of the importance score in the ranking (default: 4.0).
        reserve (bool): always keep the reserved tokens (default: ``True``).
        score_net (bool): own the importance head ``prob_net = Linear(C, 1)``; with
            ``False`` the caller passes ``importance`` (the AFF backbone keeps the head in its
            stage, where the official checkpoints store it). Default: ``True``.
        cluster_size (int), nbhd_size (int): neighbourhoods of the packed path, as in
            :class:`ClusterAttention` (defaults: 8, 48).
        inner_channels (int): weight channels of the merge (default: 4).

    Shapes:
        - **input:** ``x [N, C]``, ``pos [N, D]``, ``batch [N]`` (optional); dense:
          ``x [B, N, C]``, ``pos [B, N, D]``, ``importance [B, N, 1]``
        - **output:** ``(x [N', C_out], pos [N', D], batch [N'], perm [N'])``; dense:
          :class:`Downsampled`

    Example::

        >>> down = AdaptiveDownsample(16, 32)
        >>> ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        >>> pos = torch.stack([xs, ys], -1).view(-1, 2)
        >>> x, pos2, batch, perm = down(torch.randn(256, 16), pos, adaptive_prior=False)
        >>> x.shape, pos2.shape
        (torch.Size([64, 32]), torch.Size([64, 2]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pos_dim: int = 2,
        ratio: float = 0.25,
        alpha: float = 4.0,
        reserve: bool = True,
        score_net: bool = True,
        cluster_size: int = 8,
        nbhd_size: int = 48,
        inner_channels: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("pos_dim", pos_dim),
            ("inner_channels", inner_channels),
        ):
            check_positive_int(value, name)
        check_neighbourhood_sizes(cluster_size, nbhd_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.pos_dim = pos_dim
        self.ratio = ratio
        self.alpha = alpha
        self.reserve = reserve
        self.cluster_size = cluster_size
        self.nbhd_size = nbhd_size
        self.weight_net = nn.Sequential(
            nn.Linear(2 * pos_dim + 1, inner_channels),
            nn.LayerNorm(inner_channels),
            nn.GELU(),
        )
        self.norm = nn.LayerNorm(inner_channels * in_channels)
        self.linear = nn.Linear(inner_channels * in_channels, out_channels)
        self.prob_net = nn.Linear(in_channels, 1) if score_net else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (*self.weight_net, self.norm, self.linear, self.prob_net):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        stride: float = 2.0,
        adaptive_prior: bool = True,
        extent: Sequence[float] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Downsample packed tokens ``x [N, C]`` at ``pos [N, D]``.

        Args:
            stride: lattice stride of the tokens; reserved tokens sit at multiples of
                ``2 * stride``, the fixed prior at multiples of ``stride``.
            adaptive_prior: derive the prior stride per token from its nearest neighbour
                (``False``: use ``stride``, for tokens on a full lattice).
            extent: lattice size per coordinate for the clustering (see
                :func:`pointset.ops.balanced_cluster`).

        Returns:
            ``(x [N', C_out], pos [N', D], batch [N'], perm [N'])`` with ``perm`` the
            indices of the kept tokens into the input, cloud by cloud.
        """
        check_points(pos)
        check_features(x, self.in_channels, pos.size(0))
        check_pos_dim(pos, self.pos_dim)
        if self.prob_net is None:
            raise ValueError(
                "this layer has no importance head (score_net=False); use forward_dense"
            )
        xd, pd, valid, counts = packed_to_padded(x, pos, batch)
        nbhd = prechecked.cluster_neighbourhood(
            pd, self.cluster_size, self.nbhd_size, counts, extent=extent, per_cloud=True
        )
        out = self.forward_dense(xd, pd, nbhd, None, stride, adaptive_prior, counts)
        kept = torch.tensor(out.counts, device=x.device)
        rows = torch.arange(out.index.size(1), device=x.device) < kept.view(-1, 1)
        starts = torch.cumsum(torch.tensor([0] + counts[:-1], device=x.device), 0)
        perm = (out.index + starts.view(-1, 1))[rows]
        new_batch = torch.arange(len(counts), device=x.device).repeat_interleave(kept)
        return out.x[rows], out.pos[rows], new_batch, perm

    def forward_dense(
        self,
        x: Tensor,
        pos: Tensor,
        nbhd: Neighbourhood,
        importance: Tensor | None = None,
        stride: float = 2.0,
        adaptive_prior: bool = True,
        lengths: Sequence[int] | None = None,
    ) -> Downsampled:
        """Downsample padded tokens ``x [B, N, C]`` at ``pos [B, N, D]``.

        ``nbhd`` are the tokens' neighbourhoods (:func:`cluster_neighbourhood`),
        ``importance [B, N, 1]`` the scores in ``(0, 1)`` (default: this layer's head),
        ``lengths`` the tokens per cloud (default: all ``N``).
        """
        batch, num, _ = x.shape
        counts = [num] * batch if lengths is None else [int(n) for n in lengths]
        if importance is None:
            if self.prob_net is None:
                raise ValueError("importance is required when the layer has no score_net")
            importance = torch.sigmoid(self.prob_net(x))
        index, kept = self.select(pos, importance, stride, adaptive_prior, counts, nbhd)

        sub = expand_global(nbhd, batch, num, x.device).rows(index)
        centers = pos.gather(1, index.unsqueeze(-1).expand(-1, -1, pos.size(-1)))
        with torch.no_grad():
            offsets = gather_tokens(pos, sub.index) - centers.unsqueeze(2)
            feats = rel_pos_features(offsets.to(x.dtype))
        weights = self.weight_net(feats)  # [B, K, M, I]
        prob = gather_tokens(importance, sub.index)  # [B, K, M, 1], not detached
        if sub.mask is not None:
            prob = prob * sub.mask.unsqueeze(-1).to(prob.dtype)
        if sub.exclude is not None:
            prob = prob.masked_fill(sub.exclude.unsqueeze(-1), 0.0)
        weights = weights * prob
        merged = neighbour_sum(weights.permute(0, 3, 1, 2), x.unsqueeze(1), sub.index)
        out = self.linear(self.norm(merged.transpose(1, 2).flatten(2)))  # [B,K,I,C] -> I outer
        return Downsampled(out, centers, index, kept)

    def select(
        self,
        pos: Tensor,
        importance: Tensor,
        stride: float,
        adaptive_prior: bool,
        counts: list[int],
        nbhd: Neighbourhood | None = None,
    ) -> tuple[Tensor, list[int]]:
        """Indices ``[B, max_keep]`` of the kept tokens and the number kept per cloud
        (``nbhd`` only speeds up the nearest-token search of the adaptive prior)."""
        batch, num, _ = pos.shape
        device = pos.device
        keep = [int(n * self.ratio) for n in counts]
        for b, (n, k) in enumerate(zip(counts, keep)):
            if k < 1:
                raise ValueError(f"cloud {b} has {n} tokens; ratio={self.ratio} keeps none of them")
        lengths = torch.tensor(counts, device=device)
        valid = torch.arange(num, device=device) < lengths.view(-1, 1)
        if adaptive_prior:
            full = all(n == num for n in counts)
            dist = nearest_other_distance(pos, None if full else lengths, nbhd)
            local = 2 ** (torch.ceil(torch.log2(dist)) + 1)
            prior = torch.remainder(pos, local.unsqueeze(-1).to(pos.dtype)).sum(-1) == 0
        else:
            prior = torch.remainder(pos, stride).sum(-1) == 0
        score = prior.to(importance.dtype) + importance.detach().view(batch, num) * self.alpha
        if self.reserve:
            reserved = (torch.remainder(pos, 2 * stride).sum(-1) == 0) & valid
        else:
            reserved = torch.zeros_like(valid)
        num_reserved = reserved.sum(1).tolist()
        sample = [k - r for k, r in zip(keep, num_reserved)]
        for b, (k, r) in enumerate(zip(keep, num_reserved)):
            if r > k:
                raise ValueError(
                    f"cloud {b} has {r} reserved tokens (coordinates multiple of "
                    f"{2 * stride}) but keeps only {k}; lower the stride or set reserve=False"
                )
        score = score.masked_fill(reserved | ~valid, float("-inf"))
        ranked = torch.sort(score, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(ranked)
        rank.scatter_(1, ranked, torch.arange(num, device=device).expand(batch, -1))
        sample_t = torch.tensor(sample, device=device).view(-1, 1)
        slot = torch.where(rank < sample_t, rank, num + 2 * num)
        slot = torch.where(reserved, sample_t + reserved.cumsum(1) - 1, slot)
        index = torch.sort(slot, dim=1, stable=True).indices[:, : max(keep)]
        if any(k != max(keep) for k in keep):
            row = torch.arange(max(keep), device=device)
            filler = index[:, :1].expand_as(index)
            index = torch.where(row < torch.tensor(keep, device=device).view(-1, 1), index, filler)
        return index, keep

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"ratio={self.ratio}, alpha={self.alpha}, reserve={self.reserve})"
        )
