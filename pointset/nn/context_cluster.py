"""Context Cluster token mixer (CoC) for images and general point sets."""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from pointset._checks import check_positive_int
from pointset.nn._lattice import check_lattice, is_row_major_grid
from pointset.nn.cluster_plan import ClusterPlan, folds, grid_plan, grid_runs, point_plan

__all__ = ["ContextCluster"]


def _pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a 1x1 convolution to channels-last features ``x [..., C_in]``."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def _first_argmax(score: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Per group and column, the id of the highest-scoring row (first row on ties).

    ``score [E, H]``, ``group [E]`` -> ``[num_groups, H]`` row ids into ``score``.
    """
    best = scatter(score, group, 0, num_groups, reduce="max")
    rows = torch.arange(score.size(0), device=score.device).view(-1, 1).expand_as(score)
    key = torch.where(score == best[group], rows, score.size(0))
    return scatter(key, group, 0, num_groups, reduce="min")


class ContextCluster(MessagePassing):
    r"""The Context Cluster token mixer from `"Image as Set of Points"
    <https://arxiv.org/abs/2303.01494>`_ (Ma et al., ICLR 2023).

    Points are projected to similarity features :math:`f_i = W_f x_i` and values
    :math:`v_i = W_v x_i`, split into ``heads`` heads of ``head_dim`` channels (the head is the
    outer channel index). Per head, centers :math:`c_m` with value centers :math:`v_{c_m}` are
    the means of their pooling members; each point is compared with its candidate centers,

    .. math::
        s_{im} = \sigma\big(\beta + \alpha \cos(f_{c_m}, f_i)\big),

    keeps only its most similar candidate (:math:`s_{im} \leftarrow 0` otherwise), and the
    clusters aggregate and dispatch

    .. math::
        g_m = \frac{v_{c_m} + \sum_i s_{im} v_i}{1 + \sum_i s_{im}}, \qquad
        y_i = W_p \big\Vert_{h} \sum_m s_{im}\, g_m ,

    with :math:`\alpha` (``sim_alpha``, init 1) and :math:`\beta` (``sim_beta``, init 0)
    learned scalars, cosine via ``F.normalize`` (eps 1e-12), and heads concatenated before
    the output projection :math:`W_p` (``proj``).

    Two paths compute this:

    * **grid path** (:meth:`forward_dense` on ``x [B, C, H, W]``, or :meth:`forward` on
      packed ``x [N, C]`` with ``grid_size``): the official dense computation. The map is folded into ``fold_w x fold_h`` contiguous
      regions (only if both folds exceed 1), each region proposes
      ``proposal_w x proposal_h`` centers by adaptive average pooling (overlapping windows
      when the sizes do not divide), and every point's candidates are the centers of its
      region. As in the official code, ``*_w`` acts on rows (dim -2), ``*_h`` on columns.
    * **point path** (``x [N, C]``, ``pos [N, D]``, ``batch [N]``, any ``D``, clouds of
      unequal size): message passing over a :class:`ClusterPlan`. By default centers are
      FPS samples of each cloud pooled from their ``center_k`` nearest points, and a point's
      candidates are its ``candidates`` nearest centers. Pass ``centers=`` (positions) to
      choose the centers, or ``plan=`` to give the whole structure; ``grid_plan(...)``
      reproduces the grid path exactly, forward and backward.

    Args:
        in_channels (int): input channels.
        out_channels (int, optional): output channels (default: ``in_channels``).
        heads (int): number of heads (default: 4).
        head_dim (int): channels per head (default: 24).
        proposal_w, proposal_h (int): centers per region along rows / columns (grid path,
            default: 2, 2).
        fold_w, fold_h (int): regions along rows / columns (grid path, default: 2, 2).
        num_centers (int, optional): FPS centers per cloud on the point path. Default:
            ``proposal_w * proposal_h`` times the number of fold regions, the number of
            centers the grid path uses per image.
        center_ratio (float, optional): FPS centers as a fraction of each cloud instead.
        center_k (int): points averaged into a center feature on the point path
            (default: 16).
        candidates (int, optional): nearest centers each point is compared with on the point
            path (default: ``proposal_w * proposal_h``).
        denominator (str): ``"sim"`` divides by :math:`1 + \sum_i s_{im}` (the current
            official code); ``"count"`` divides by 1 + the number of assigned points (the
            code before 2023-05-31, with which the first released checkpoints were trained).

    Shapes:
        - **input (grid):** packed ``x [N, in_channels]`` (row-major per image) with ``grid_size``
          ``(H, W)`` or ``[B, 2]`` (the :class:`~pointset.data.PointSet` record) ->
          ``[N, out_channels]``; dense (:meth:`forward_dense`): ``x [B, in_channels, H, W]`` ->
          ``[B, out_channels, H, W]``.
        - **input (points):** ``x [N, in_channels]``, ``pos [N, D]``, ``batch [N]`` (optional),
          ``centers [M, D]`` and ``center_batch [M]`` (optional) or ``plan`` -> ``[N, out_channels]``.
        - **output with** ``return_assignment=True``: ``(out, assignment)``, ``assignment``
          ``[N, heads]`` (grid: ``[B * H * W, heads]``) long, the center of every point per
          head, numbered like the plan's centers.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        heads: int = 4,
        head_dim: int = 24,
        proposal_w: int = 2,
        proposal_h: int = 2,
        fold_w: int = 2,
        fold_h: int = 2,
        num_centers: int | None = None,
        center_ratio: float | None = None,
        center_k: int = 16,
        candidates: int | None = None,
        denominator: str = "sim",
    ) -> None:
        super().__init__(aggr="sum", node_dim=0)
        for name, value in (
            ("in_channels", in_channels),
            ("heads", heads),
            ("head_dim", head_dim),
            ("proposal_w", proposal_w),
            ("proposal_h", proposal_h),
            ("fold_w", fold_w),
            ("fold_h", fold_h),
            ("center_k", center_k),
        ):
            check_positive_int(value, name)
        for name, value in (
            ("out_channels", out_channels),
            ("num_centers", num_centers),
            ("candidates", candidates),
        ):
            if value is not None:
                check_positive_int(value, name)
        if denominator not in ("sim", "count"):
            raise ValueError(f"denominator must be 'sim' or 'count', got {denominator!r}")
        if num_centers is not None and center_ratio is not None:
            raise ValueError("give num_centers or center_ratio, not both")
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.heads = heads
        self.head_dim = head_dim
        self.proposal_w, self.proposal_h = proposal_w, proposal_h
        self.fold_w, self.fold_h = fold_w, fold_h
        regions = folds(fold_w, fold_h)
        if num_centers is None and center_ratio is None:
            num_centers = proposal_w * proposal_h * regions[0] * regions[1]
        self.num_centers = num_centers
        self.center_ratio = center_ratio
        self.center_k = center_k
        self.candidates = candidates if candidates is not None else proposal_w * proposal_h
        self.denominator = denominator

        inner = heads * head_dim
        self.f = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.proj = nn.Conv2d(inner, self.out_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.sim_alpha = nn.Parameter(torch.empty(1))
        self.sim_beta = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.f.reset_parameters()
        self.proj.reset_parameters()
        self.v.reset_parameters()
        nn.init.ones_(self.sim_alpha)
        nn.init.zeros_(self.sim_beta)

    # ------------------------------------------------------------------ entry point
    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        grid_size: Union[Tuple[int, int], Tensor] | None = None,
        plan: ClusterPlan | None = None,
        centers: Tensor | None = None,
        center_batch: Tensor | None = None,
        return_assignment: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Mix ``x``; see the class docstring for the grid and point paths.

        With ``return_assignment=True`` the result is ``(out, assignment)``:
        ``assignment [N, heads]`` (``[B * H * W, heads]`` for a ``[B, C, H, W]`` map, cells
        in row-major order) is the center id each point is assigned to in each head, numbered
        like the plan's centers (:func:`~pointset.nn.grid_plan` on the grid path).
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got dtype {x.dtype}")
        if x.dim() != 2:
            raise ValueError(
                f"x must be packed points [N, C], got shape {tuple(x.shape)} (feature maps "
                "[B, C, H, W] go to forward_dense)"
            )
        self._check_channels(x.size(1), tuple(x.shape))
        n = x.size(0)
        if n == 0:
            raise ValueError("x is empty (0 points)")
        if pos is not None and (not isinstance(pos, Tensor) or pos.dim() != 2 or pos.size(0) != n):
            shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(f"pos must have shape [{n}, D] to match x, got {shape}")
        if grid_size is not None:
            out = self._forward_packed_grid(x, grid_size, return_assignment)
            return self._result(*out, return_assignment)
        if plan is None:
            if pos is None:
                raise ValueError("the point path needs pos (or a plan)")
            plan = self.plan(pos, batch, centers=centers, center_batch=center_batch)
        else:
            plan.validate(n)
        return self._result(*self._forward_points(x, plan, return_assignment), return_assignment)

    def forward_dense(
        self, x: Tensor, return_assignment: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """The official grid path on feature maps ``x [B, C, H, W]`` -> ``[B, out_channels, H, W]``
        (with ``return_assignment=True`` also the ``[B * H * W, heads]`` assignment, cells in
        row-major order, centers numbered like :func:`~pointset.nn.grid_plan`)."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a feature map [B, C, H, W], got shape {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got dtype {x.dtype}")
        self._check_channels(x.size(1), tuple(x.shape))
        if x.size(0) == 0 or x.size(2) == 0 or x.size(3) == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)}")
        return self._result(*self._forward_grid(x, return_assignment), return_assignment)

    @staticmethod
    def _result(
        out: Tensor, assignment: Tensor | None, return_assignment: bool
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        return (out, assignment) if return_assignment else out

    def plan(
        self,
        pos: Tensor,
        batch: Tensor | None = None,
        centers: Tensor | None = None,
        center_batch: Tensor | None = None,
    ) -> ClusterPlan:
        """The point-path :class:`ClusterPlan` this layer builds for ``pos [N, D]``.

        Reuse it across the blocks of a stage (positions do not change inside a stage).
        """
        return point_plan(
            pos,
            batch,
            num_centers=self.num_centers,
            center_ratio=self.center_ratio,
            center_k=self.center_k,
            candidates=self.candidates,
            centers=centers,
            center_batch=center_batch,
        )

    @property
    def regions(self) -> Tuple[int, int]:
        """The fold regions used along rows and columns: ``(fold_w, fold_h)`` when both
        exceed 1, else ``(1, 1)`` (the official rule)."""
        return folds(self.fold_w, self.fold_h)

    def lattice_plan(
        self,
        pos: Tensor,
        batch: Tensor | None = None,
        size: Union[Tuple[int, int], Tensor] | None = None,
        mode: str = "auto",
    ) -> ClusterPlan:
        """The :class:`ClusterPlan` for points on integer pixel lattices.

        ``pos [N, 2]`` are ``(row, col)`` cells, ``batch [N]`` their clouds and ``size``
        ``(H, W)`` or ``[B, 2]`` the lattice extents (default: largest cell + 1 per cloud),
        the output layout of :class:`~pointset.nn.GridPointReducer`.

        * ``"grid"``: :meth:`grid_plan`, the official fold regions and pooled centers;
          needs whole lattices of one size, in row-major order, that the folds divide.
          The layer then computes what its dense path computes on the images.
        * ``"fps"``: :func:`point_plan` with FPS centers at the grid path's density (its
          centers per image over the cells of the largest lattice of the batch), each
          pooled from ``min(center_k, smallest cloud)`` nearest points; each point's
          candidates are its ``min(candidates, fewest centers)`` nearest centers.
        * ``"auto"`` (default): ``"grid"`` where it applies, else ``"fps"``.
        """
        if mode not in ("auto", "grid", "fps"):
            raise ValueError(f"mode must be 'auto', 'grid' or 'fps', got {mode!r}")
        n = pos.size(0) if isinstance(pos, Tensor) else 0
        cells, batch, size = check_lattice(pos, batch, size, n)
        fw, fh = folds(self.fold_w, self.fold_h)
        h, w = (int(v) for v in size[0])
        grid_ok = is_row_major_grid(cells, batch, size) and h % fw == 0 and w % fh == 0
        if mode == "grid" and not grid_ok:
            counts = torch.bincount(batch, minlength=size.size(0)).tolist()
            raise ValueError(
                f"the grid plan needs whole images of one size (every cell, in row-major "
                f"order) that the folds ({fw}x{fh}) divide; got lattices {size.tolist()} "
                f"with {counts} points"
            )
        if grid_ok and mode != "fps":
            return self.grid_plan(size.size(0), h, w, device=cells.device)

        per_image = self.proposal_w * self.proposal_h * fw * fh
        # just below the exact density, so that a whole image gets exactly ``per_image``
        ratio = min(1.0, per_image / float(size.prod(1).max()) * (1.0 - 1e-9))
        smallest = int(torch.bincount(batch, minlength=size.size(0)).min())
        return point_plan(
            cells.to(torch.float32),
            batch,
            center_ratio=ratio,
            center_k=min(self.center_k, smallest),
            candidates=min(self.candidates, math.ceil(ratio * smallest)),
        )

    def grid_plan(self, batch_size: int, height: int, width: int, device=None) -> ClusterPlan:
        """The :class:`ClusterPlan` equal to this layer's grid path on ``height x width`` maps."""
        return grid_plan(
            batch_size,
            height,
            width,
            self.proposal_w,
            self.proposal_h,
            self.fold_w,
            self.fold_h,
            device=device,
        )

    def _check_channels(self, channels: int, shape: tuple) -> None:
        if channels != self.in_channels:
            raise ValueError(
                f"x has {channels} channels (shape {shape}), but the layer expects in_channels={self.in_channels}"
            )

    # ------------------------------------------------------------------ grid path
    def _forward_packed_grid(
        self, x: Tensor, grid_size, want: bool
    ) -> Tuple[Tensor, Tensor | None]:
        """Run the grid path on each run of same-size grids; centers of a run are numbered
        after those of the previous runs."""
        outs, assigned, offset = [], [], 0
        per_image = self.proposal_w * self.proposal_h * math.prod(folds(self.fold_w, self.fold_h))
        for (h, w), part in grid_runs(grid_size, x):
            image = part.view(-1, h, w, self.in_channels).permute(0, 3, 1, 2)
            out, ids = self._forward_grid(image, want)
            outs.append(out.permute(0, 2, 3, 1).reshape(-1, self.out_channels))
            if want:
                assigned.append(ids + offset)
                offset += image.size(0) * per_image
        return torch.cat(outs), (torch.cat(assigned) if want else None)

    def _forward_grid(self, x: Tensor, want: bool = False) -> Tuple[Tensor, Tensor | None]:
        b, _, h, w = x.shape
        e, d = self.heads, self.head_dim
        fw, fh = folds(self.fold_w, self.fold_h)
        if h % fw or w % fh:
            raise ValueError(
                f"the feature map ({h}x{w}) must be divisible by the folds ({fw}x{fh})"
            )
        rh, rw = h // fw, w // fh

        def regions(t: Tensor) -> Tensor:  # [B, e*d, H, W] -> [B*e*fw*fh, d, rh, rw]
            t = t.reshape(b * e, d, fw, rh, fh, rw).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(-1, d, rh, rw)

        feat, value = regions(self.f(x)), regions(self.v(x))
        size = (self.proposal_w, self.proposal_h)
        centers = F.adaptive_avg_pool2d(feat, size).flatten(2).transpose(1, 2)  # [R, M, d]
        value_centers = F.adaptive_avg_pool2d(value, size).flatten(2).transpose(1, 2)
        feat = feat.flatten(2).transpose(1, 2)  # [R, n, d]
        value = value.flatten(2).transpose(1, 2)

        cos = F.normalize(centers, dim=-1) @ F.normalize(feat, dim=-1).transpose(1, 2)
        sim = torch.sigmoid(self.sim_beta + self.sim_alpha * cos)  # [R, M, n]
        best = sim.argmax(dim=1, keepdim=True)  # [R, 1, n]
        mask = torch.zeros_like(sim).scatter_(1, best, 1.0)
        sim = sim * mask
        ids = self._grid_ids(best.detach(), b, h, w) if want else None
        weight = sim if self.denominator == "sim" else mask
        out = (sim @ value + value_centers) / (weight.sum(-1, keepdim=True) + 1.0)  # [R, M, d]
        y = sim.transpose(1, 2) @ out  # [R, n, d]

        y = y.transpose(1, 2).reshape(b * e, fw, fh, d, rh, rw).permute(0, 3, 1, 4, 2, 5)
        return self.proj(y.reshape(b, e * d, h, w)), ids

    def _grid_ids(self, best: Tensor, b: int, h: int, w: int) -> Tensor:
        """``best [B*e*fw*fh, 1, rh*rw]`` (center per point within its region) as
        ``[B*H*W, e]`` center ids numbered like :func:`grid_plan`."""
        e = self.heads
        fw, fh = folds(self.fold_w, self.fold_h)
        rh, rw = h // fw, w // fh
        per_region = self.proposal_w * self.proposal_h
        local = best.view(b, e, fw, fh, rh, rw)
        dev = best.device
        region = (
            torch.arange(b, device=dev).view(-1, 1, 1, 1, 1, 1) * fw
            + torch.arange(fw, device=dev).view(1, 1, -1, 1, 1, 1)
        ) * fh + torch.arange(fh, device=dev).view(1, 1, 1, -1, 1, 1)
        ids = region * per_region + local  # [B, e, fw, fh, rh, rw]
        return ids.permute(0, 2, 4, 3, 5, 1).reshape(b * h * w, e)

    # ------------------------------------------------------------------ point path
    def _forward_points(
        self, x: Tensor, plan: ClusterPlan, want: bool = False
    ) -> Tuple[Tensor, Tensor | None]:
        n, e, d = x.size(0), self.heads, self.head_dim
        m = int(plan.num_centers)
        feat = _pointwise(self.f, x).view(n, e, d)
        value = _pointwise(self.v, x).view(n, e, d)

        member, pooled = plan.pool_index
        centers = scatter(feat[member], pooled, 0, m, reduce="mean")  # [M, e, d]
        value_centers = scatter(value[member], pooled, 0, m, reduce="mean")

        point, cand = plan.cand_index
        cos = (F.normalize(feat, dim=-1)[point] * F.normalize(centers, dim=-1)[cand]).sum(-1)
        sim = torch.sigmoid(self.sim_beta + self.sim_alpha * cos)  # [E, e]
        chosen = _first_argmax(sim.detach(), point, n)  # [N, e] candidate-edge ids

        # one edge per (point, head) node -> (center, head) node
        head = torch.arange(e, device=x.device)
        src = (torch.arange(n, device=x.device).view(-1, 1) * e + head).view(-1)
        assigned = cand[chosen]  # [N, e] center id of every (point, head)
        dst = (assigned * e + head).view(-1)
        s = sim.gather(0, chosen).view(-1)  # [N*e]
        edge_index = torch.stack([src, dst])

        agg = self.propagate(edge_index, x=(value.view(n * e, d), None), s=s, size=(n * e, m * e))
        weight = s if self.denominator == "sim" else torch.ones_like(s)
        norm = scatter(weight, dst, 0, m * e, reduce="sum") + 1.0
        out = (agg + value_centers.view(m * e, d)) / norm.unsqueeze(-1)  # [M*e, d]

        y = self.propagate(edge_index.flip(0), x=(out, None), s=s, size=(m * e, n * e))
        return _pointwise(self.proj, y.view(n, e * d)), (assigned.detach() if want else None)

    def message(self, x_j: Tensor, s: Tensor) -> Tensor:
        return s.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, "
            f"head_dim={self.head_dim}, proposal=({self.proposal_w}, {self.proposal_h}), "
            f"fold=({self.fold_w}, {self.fold_h}))"
        )
